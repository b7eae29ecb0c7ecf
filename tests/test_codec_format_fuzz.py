"""Fuzzing the .fcdc reader: random and mutated bytes either read back as consistent codes or raise
FormatError - never another exception. (hypothesis is a test extra; a machine without it skips.)"""
import pytest

from fastcodec import FormatError

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_codec_format import GOOD, _read, _with_header  # noqa: E402

from fastcodec.codec import format as fcdc  # noqa: E402


def _outcome(data):
    """Reading must either give codes consistent with the header or raise FormatError."""
    try:
        h, codes = _read(data)
    except FormatError:
        return None
    assert codes.shape == (h.channels, h.n_q, h.frames)
    assert codes.min(initial=0) >= 0 and codes.max(initial=0) < h.codebook_size
    return codes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data):
    _outcome(data)
    _outcome(fcdc.MAGIC + data)
    _outcome(GOOD[:68] + data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(GOOD)), st.binary(max_size=8))
def test_fuzz_mutated_files(edits, cut, insert):
    data = bytearray(GOOD)
    for pos, val in edits:
        data[pos] = val
    codes = _outcome(bytes(data))
    if codes is not None:  # only a no-op mutation may read back, and then as the original
        assert bytes(data) == GOOD
    assert _outcome(bytes(data[:cut]) + insert + bytes(data[cut:])) is None or not insert


# Valid CRC, hostile sizes: any mix of size fields rewritten, the header CRC recomputed. A file
# that still reads must hold what its header says, and no source length beyond its frames'.
SIZE_FIELDS = {"sample_rate": 32, "hop": 32, "codebook_size": 32, "channels": 16, "n_q": 16, "chunk_frames": 32,
               "source_rate": 32, "samples": 64, "source_samples": 64, "frames": 64}
_size = st.one_of(st.integers(0, 4), st.integers(0, 2 ** 64 - 1), st.sampled_from([2 ** 31, 2 ** 32 - 1, 2 ** 63]))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(SIZE_FIELDS)), _size, min_size=1, max_size=4))
def test_fuzz_hostile_sizes_with_a_valid_crc(fields):
    fields = {k: v % (1 << SIZE_FIELDS[k]) for k, v in fields.items()}
    try:
        h, codes = _read(_with_header(GOOD, **fields))
    except FormatError as exc:
        assert "x.fcdc" in str(exc)
        return
    assert codes.shape == (h.channels, h.n_q, h.frames)
    assert fcdc.source_length_fits(h.samples, h.sample_rate, h.source_samples, h.source_rate)
    assert h.samples <= h.frames * h.hop

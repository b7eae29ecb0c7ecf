"""Fuzzing the .fcdc reader: random and mutated bytes either read back as consistent codes or raise
FormatError - never another exception. (hypothesis is a test extra; a machine without it skips.)"""
import pytest

from fastcodec import FormatError

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_codec_format import GOOD, _read  # noqa: E402

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

"""The .fcdc bitstream: bit packing, writer/reader round trips at any chunking, and a FormatError
(never another exception, never a large allocation) for every kind of bad file. Fuzzed in
test_codec_format_fuzz.py."""
import io
import math
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from fastcodec import FormatError
from fastcodec.codec import format as fcdc

FP = "0123456789abcdef"


def _file(codes, chunk_frames=5, K=1000, samples=None, hop=4):
    """A complete .fcdc file in memory holding codes [C, n_q, F]; returns its bytes."""
    C, n_q, F = codes.shape
    buf = io.BytesIO()
    w = fcdc.Writer(buf, sample_rate=8000, hop=hop, codebook_size=K, channels=C, n_q=n_q, fingerprint=FP,
                    source_rate=44100, chunk_frames=chunk_frames)
    i = 0
    rng = np.random.default_rng(F)
    while i < F:  # uneven pieces, as a streaming encoder emits them
        n = int(rng.integers(0, 4))
        w.write(codes[:, :, i: i + n])
        i += n
    samples = F * hop - 1 if samples is None else samples
    w.finish(samples, math.ceil(samples * 44100 / 8000))
    return buf.getvalue()


def _read(data):
    r = fcdc.Reader(io.BytesIO(data), "x.fcdc")
    return r.header, r.codes()


@pytest.mark.parametrize("bits", [1, 2, 3, 7, 8, 10, 13, 16])
def test_pack_unpack_round_trip(bits):
    rng = np.random.default_rng(bits)
    for n in (1, 3, 8, 37):
        v = rng.integers(0, 2 ** bits, n)
        data = fcdc.pack_codes(v, bits)
        assert len(data) == math.ceil(n * bits / 8)
        assert np.array_equal(fcdc.unpack_codes(data, n, bits), v)


def test_packing_is_lsb_first():
    # 3-bit codes 5 (101), 3 (011): bits in stream order 1,0,1, 1,1,0 -> byte 0b00011101.
    assert fcdc.pack_codes(np.array([5, 3]), 3) == bytes([0b00011101])


@pytest.mark.parametrize("C,n_q,F,chunk", [(1, 1, 1, 1), (2, 3, 17, 5), (1, 8, 40, 40), (3, 2, 11, 100)])
def test_write_read_round_trip(C, n_q, F, chunk):
    codes = np.random.default_rng(F).integers(0, 1000, (C, n_q, F))
    h, back = _read(_file(codes, chunk))
    assert np.array_equal(back, codes)
    assert (h.channels, h.n_q, h.frames, h.chunk_frames, h.n_chunks) == (C, n_q, F, chunk, math.ceil(F / chunk))
    assert (h.sample_rate, h.hop, h.codebook_size, h.bits, h.fingerprint) == (8000, 4, 1000, 10, FP)
    assert h.samples == F * 4 - 1 and h.source_rate == 44100
    # Any chunk can be read on its own: what decoding from a given time needs.
    r = fcdc.Reader(io.BytesIO(_file(codes, chunk)))
    i = r.chunk_of_frame(F - 1)
    assert np.array_equal(r.chunk(i), codes[:, :, i * chunk:])


def test_size_is_the_bit_packed_size():
    codes = np.random.default_rng(0).integers(0, 1024, (2, 8, 75))
    data = _file(codes, chunk_frames=75, K=1024)
    # 2 ch x 8 stages x 75 frames x 10 bits = 1500 bytes of codes, plus header, one index entry, footer.
    assert len(data) == 68 + 1500 + 16 + 20


def test_writer_refuses_bad_codes():
    w = fcdc.Writer(io.BytesIO(), sample_rate=8000, hop=4, codebook_size=16, channels=2, n_q=3, fingerprint=FP,
                    source_rate=8000, chunk_frames=4)
    with pytest.raises(ValueError, match=r"\[2, 3, n\]"):
        w.write(np.zeros((3, 2, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="0..15"):
        w.write(np.full((2, 3, 1), 16))
    with pytest.raises(ValueError, match="fingerprint"):
        fcdc.Writer(io.BytesIO(), sample_rate=8000, hop=4, codebook_size=16, channels=2, n_q=3, fingerprint="xyz",
                    source_rate=8000, chunk_frames=4)


GOOD = _file(np.random.default_rng(1).integers(0, 1000, (2, 3, 13)), chunk_frames=4)


def test_every_truncation_is_a_format_error():
    for n in range(len(GOOD)):
        with pytest.raises(FormatError, match="x.fcdc"):
            _read(GOOD[:n])


def test_every_single_byte_corruption_is_a_format_error():
    # Header, chunks, index and footer are all CRC-checked or size-checked, so no flip goes unseen.
    for i in range(len(GOOD)):
        bad = bytearray(GOOD)
        bad[i] ^= 0x5A
        with pytest.raises(FormatError):
            _read(bytes(bad))


def _with_header(data, **fields):
    """data with header fields replaced and the header CRC recomputed (a 'valid' lying header)."""
    names = ["magic", "version", "header_size", "sample_rate", "hop", "codebook_size", "channels", "n_q",
             "chunk_frames", "source_rate", "samples", "source_samples", "frames", "fingerprint"]
    values = dict(zip(names, fcdc._HEADER.unpack_from(data)))
    values.update(fields)
    body = fcdc._HEADER.pack(*(values[n] for n in names))
    return body + struct.pack("<I", zlib.crc32(body)) + data[fcdc._HEADER_SIZE:]


def test_wrong_magic_and_newer_version():
    with pytest.raises(FormatError, match="not a .fcdc file"):
        _read(b"RIFF" + GOOD[4:])
    with pytest.raises(FormatError, match="version 2 is newer .* upgrade fastcodec"):
        _read(_with_header(GOOD, version=2))
    with pytest.raises(FormatError, match="not a .fcdc file"):
        _read(b"")


def test_lying_length_fields_allocate_nothing():
    # A header whose CRC is right but whose counts claim ~10^15 frames: refused by checking the
    # sizes against the file's, before anything of that size exists.
    huge = 10 ** 15
    tracemalloc.start()
    for fields in ({"frames": huge, "samples": huge * 4}, {"chunk_frames": 1, "frames": huge, "samples": huge * 4},
                   {"channels": 60000, "n_q": 60000}):
        with pytest.raises(FormatError):
            _read(_with_header(GOOD, **fields))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20
    footer = bytearray(GOOD)
    struct.pack_into("<I", footer, len(GOOD) - 12, 2 ** 32 - 1)  # chunk count
    with pytest.raises(FormatError, match="index"):
        _read(bytes(footer))


def test_codes_beyond_the_codebook_are_refused():
    # K = 1000 in 10 bits: 1023 fits the bits but not the codebook. Forge a chunk (with its CRC).
    data = bytearray(_file(np.zeros((1, 1, 2), dtype=np.int64), chunk_frames=2))
    payload = fcdc.pack_codes(np.array([1023, 0]), 10)
    data[68:68 + len(payload)] = payload
    index_at = struct.unpack_from("<Q", data, len(data) - 20)[0]
    struct.pack_into("<I", data, index_at + 12, zlib.crc32(payload))
    struct.pack_into("<I", data, len(data) - 8, zlib.crc32(bytes(data[index_at:index_at + 16])))
    with pytest.raises(FormatError, match="beyond the codebook"):
        _read(bytes(data))


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        fcdc.read_header(tmp_path / "nope.fcdc")
    with pytest.raises(FormatError, match="directory"):
        fcdc.read_header(tmp_path)


def test_writer_refuses_more_channels_than_the_format_holds():
    with pytest.raises(ValueError, match="1 to 1024 channels"):
        fcdc.Writer(io.BytesIO(), sample_rate=8000, hop=4, codebook_size=16, channels=1025, n_q=1, fingerprint=FP,
                    source_rate=8000, chunk_frames=4)


def test_source_length_must_come_from_the_frames():
    """source_samples sizes what a decode to the source rate writes, so it must be what the frames
    hold at the two rates (within the resamplers' rounding); the probe's 480-byte file claiming
    2^33 samples is refused, naming the field."""
    h = fcdc.parse_header(GOOD, "x.fcdc")
    assert fcdc.source_length_fits(h.samples, h.sample_rate, h.source_samples, h.source_rate)
    for bad in (2 ** 33, 30_000_000, h.source_samples * 2, 0):
        with pytest.raises(FormatError, match="x.fcdc: invalid header .*source_samples is"):
            _read(_with_header(GOOD, source_samples=bad))
    for ok in (h.source_samples - 1, h.source_samples + 1):
        assert _read(_with_header(GOOD, source_samples=ok))[0].source_samples == ok
    with pytest.raises(FormatError, match="x.fcdc: invalid header .*source_rate is 768001 Hz, above the format's"):
        _read(_with_header(GOOD, source_rate=768_001))
    with pytest.raises(FormatError, match="x.fcdc: invalid header .*samples is 0"):
        _read(_with_header(GOOD, samples=0, frames=0))
    with pytest.raises(FormatError, match="x.fcdc: invalid header .*samples is 1844"):
        _read(_with_header(GOOD, samples=2 ** 64 - 1))


def test_a_failing_read_is_a_format_error_naming_the_file():
    class Broken(io.BytesIO):
        def read(self, *a):
            raise OSError(5, "Input/output error")
    with pytest.raises(FormatError, match="x.fcdc: cannot read \\(Input/output error\\)"):
        fcdc.Reader(Broken(GOOD), "x.fcdc")

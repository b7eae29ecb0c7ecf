"""The .fcdc bitstream: codes of one recording, bit-packed, in CRC-checked chunks with an index.

The layout is specified in docs/FORMAT.md; in short (little-endian throughout):

    header   68 bytes: magic b"FCDC", version, header size, the codec's sample rate, hop, codebook
             size, channels, n_q, frames per chunk, the source's sample rate, sample counts, frame
             count, the model's 8-byte fingerprint, CRC32 of the 64 bytes before it
    chunks   back to back; chunk i holds frames [i * chunk_frames, ...), frame-major
             (frame, channel, stage), each code in ceil(log2 K) bits, LSB first, zero-padded to a byte
    index    per chunk: byte offset (u64), frames (u32), CRC32 of its bytes (u32)
    footer   20 bytes: index offset (u64), chunk count (u32), CRC32 of the index (u32), b"FCDX"

Chunks let a decoder start at any time without reading what comes before (a seek costs one
decoder warm-up, see Codec.decode_file); the index sits at the end so a writer can stream
codes out as they are made and fill in the counts when the recording ends.

Reading never trusts a length field: every size is checked against the file's real size, and every
length the codes imply (samples, source_samples) against what the frames can produce, before
anything is allocated; so a corrupt or hostile file costs memory in proportion to its own size.
Every problem a reader finds is a FormatError naming the file. No pickle: the whole format is
`struct` and numpy bit operations.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import struct
import zlib

import numpy as np

from .errors import FormatError

MAGIC = b"FCDC"
FOOTER_MAGIC = b"FCDX"
VERSION = 1
_HEADER = struct.Struct("<4sHHIIIHHIIQQQ8s")   # everything the header CRC covers
_HEADER_SIZE = _HEADER.size + 4                 # 68
_INDEX_ENTRY = struct.Struct("<QII")            # offset, frames, crc32
_FOOTER = struct.Struct("<QII4s")               # index offset, chunks, index crc32, magic
_MAX_INDEX_BYTES = 1 << 31                       # an index beyond this is corrupt (billions of frames)
# libsndfile's limit, so every file a fastcodec writes can be decoded to an audio file; it also
# bounds a decoder's per-channel state that one frame of codes can demand.
MAX_CHANNELS = 1024
# The source rates an encoder accepts (fastcodec.codec.streaming.check_source_rate): below 1 kHz is
# not audio, 768 kHz is the highest rate audio hardware records at. A reader refuses a source rate
# above it: decoding back to it would write audio no format holds.
MIN_SOURCE_RATE, MAX_SOURCE_RATE = 1000, 768_000
_MAX_COUNT = 1 << 62                             # sample and frame counts must fit an int64 with room


@dataclasses.dataclass(frozen=True)
class Header:
    sample_rate: int       # the codec's rate: decoding gives audio at this rate
    hop: int               # samples per frame (frame rate = sample_rate / hop)
    codebook_size: int     # K: codes are in 0..K-1, stored in ceil(log2 K) bits
    channels: int          # each coded as its own mono stream
    n_q: int               # RVQ stages per frame
    chunk_frames: int      # frames per chunk (the last may hold fewer)
    source_rate: int       # sample rate of the audio that was encoded (decode can return to it)
    samples: int           # per channel, at sample_rate
    source_samples: int    # per channel, at source_rate
    frames: int            # per channel: ceil(samples / hop)
    fingerprint: str       # 16 hex digits naming the model (fastcodec.codec.model_fingerprint)

    @property
    def bits(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size)))

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate

    @property
    def n_chunks(self) -> int:
        return -(-self.frames // self.chunk_frames)

    @property
    def bitrate(self) -> float:
        """Bits per second of the codes, all channels."""
        return self.channels * self.n_q * self.bits * self.frame_rate

    def chunk_bytes(self, frames: int) -> int:
        return -(-frames * self.channels * self.n_q * self.bits // 8)

    def check(self, where="header"):
        problems = []
        for name in ("sample_rate", "hop", "channels", "n_q", "chunk_frames", "source_rate", "samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} is {getattr(self, name)}")
        if self.codebook_size < 2:
            problems.append(f"codebook_size is {self.codebook_size}")
        if self.channels > MAX_CHANNELS:
            problems.append(f"channels is {self.channels}, more than the format's {MAX_CHANNELS}")
        if self.source_rate > MAX_SOURCE_RATE:
            problems.append(f"source_rate is {self.source_rate} Hz, above the format's {MAX_SOURCE_RATE}")
        for name in ("samples", "source_samples", "frames"):
            if getattr(self, name) >= _MAX_COUNT:
                problems.append(f"{name} is {getattr(self, name)}")
        if problems:
            raise FormatError(f"{where}: invalid header ({'; '.join(problems)})")
        if self.frames != -(-self.samples // self.hop):
            problems.append(f"{self.frames} frames do not cover {self.samples} samples at hop {self.hop}")
        if not source_length_fits(self.samples, self.sample_rate, self.source_samples, self.source_rate):
            problems.append(f"source_samples is {self.source_samples}, but {self.samples} samples at "
                            f"{self.sample_rate} Hz are ~{self.samples * self.source_rate / self.sample_rate:.0f} at "
                            f"source_rate {self.source_rate} Hz")
        if problems:
            raise FormatError(f"{where}: invalid header ({'; '.join(problems)})")

    def pack(self) -> bytes:
        try:
            fp = bytes.fromhex(self.fingerprint)
        except ValueError:
            fp = b""
        if len(fp) != 8:
            raise ValueError(f"fingerprint must be 16 hex digits, got {self.fingerprint!r}")
        body = _HEADER.pack(MAGIC, VERSION, _HEADER_SIZE, self.sample_rate, self.hop, self.codebook_size,
                            self.channels, self.n_q, self.chunk_frames, self.source_rate, self.samples,
                            self.source_samples, self.frames, fp)
        return body + struct.pack("<I", zlib.crc32(body))


def source_length_fits(samples: int, rate: int, source_samples: int, source_rate: int) -> bool:
    """Whether source_samples at source_rate is the length that `samples` at `rate` came from:
    within one source period of the rate ratio, plus one sample (a resampler rounds each end),
    so a header cannot claim more source audio than its frames decode to."""
    return abs(source_samples * rate - samples * source_rate) <= source_rate + rate


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """codes: integers [n] in 0..2^bits-1 -> ceil(n * bits / 8) bytes, each code LSB first."""
    v = np.ascontiguousarray(codes, dtype=np.uint32).reshape(-1)
    planes = (v[:, None] >> np.arange(bits, dtype=np.uint32)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_codes(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of pack_codes: the first `count` codes of `data` as int64 [count]. Holds one byte
    per bit besides the result (not an int64 per bit)."""
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits, bitorder="little")
    planes = planes.reshape(count, bits)
    out = np.zeros(count, dtype=np.int64)
    for b in range(bits):
        out |= planes[:, b].astype(np.int64) << b
    return out


class Writer:
    """Streams codes into an open, seekable binary file.

        w = Writer(f, header_fields...)      # samples/frames are filled in by finish()
        w.write(codes)                        # codes [channels, n_q, n] ints, any n, as they come
        w.finish(samples, source_samples)     # last chunk, index, footer; rewrites the header

    Holds at most one chunk of codes; the index grows by 16 bytes per chunk.
    """

    def __init__(self, f, *, sample_rate, hop, codebook_size, channels, n_q, fingerprint, source_rate,
                 chunk_frames):
        self.f = f
        self.header = Header(sample_rate, hop, codebook_size, channels, n_q, chunk_frames, source_rate, 0, 0, 0,
                             fingerprint)
        self.header.pack()  # validates the fingerprint before anything is written
        if not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"a .fcdc file holds 1 to {MAX_CHANNELS} channels, got {channels}")
        self.start = f.tell()
        f.write(b"\0" * _HEADER_SIZE)
        self.pending = np.zeros((0, channels, n_q), dtype=np.int64)  # [n, C, n_q] frame-major
        self.index = []
        self.frames = 0

    def write(self, codes):
        h = self.header
        codes = np.asarray(codes)
        if codes.ndim != 3 or codes.shape[:2] != (h.channels, h.n_q):
            raise ValueError(f"codes must be [{h.channels}, {h.n_q}, n], got {list(codes.shape)}")
        if codes.size and (codes.min() < 0 or codes.max() >= h.codebook_size):
            raise ValueError(f"codes must be in 0..{h.codebook_size - 1}")
        self.pending = np.concatenate([self.pending, codes.transpose(2, 0, 1).astype(np.int64)])
        while len(self.pending) >= h.chunk_frames:
            self._emit(self.pending[: h.chunk_frames])
            self.pending = self.pending[h.chunk_frames:]

    def _emit(self, frames):
        data = pack_codes(frames, self.header.bits)
        self.index.append((self.f.tell() - self.start, len(frames), zlib.crc32(data)))
        self.f.write(data)
        self.frames += len(frames)

    def finish(self, samples: int, source_samples: int) -> Header:
        if len(self.pending):
            self._emit(self.pending)
            self.pending = self.pending[:0]
        h = dataclasses.replace(self.header, samples=int(samples), source_samples=int(source_samples),
                                frames=self.frames)
        h.check("writer")
        index = b"".join(_INDEX_ENTRY.pack(*e) for e in self.index)
        index_offset = self.f.tell() - self.start
        self.f.write(index)
        self.f.write(_FOOTER.pack(index_offset, len(self.index), zlib.crc32(index), FOOTER_MAGIC))
        end = self.f.tell()
        self.f.seek(self.start)
        self.f.write(h.pack())
        self.f.seek(end)
        self.header = h
        return h


def parse_header(data: bytes, name="file") -> Header:
    """The header from a file's first bytes; FormatError unless it is a complete, intact v1 header."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise FormatError(f"{name}: not a .fcdc file (it does not start with {MAGIC!r})")
    version, header_size = struct.unpack_from("<HH", data, 4)
    if version > VERSION:
        raise FormatError(f"{name}: .fcdc format version {version} is newer than this fastcodec reads "
                          f"(version {VERSION}); upgrade fastcodec")
    if version < 1 or header_size != _HEADER_SIZE:
        raise FormatError(f"{name}: corrupt header (version {version}, header size {header_size})")
    if len(data) < _HEADER_SIZE:
        raise FormatError(f"{name}: truncated ({len(data)} bytes, shorter than the header)")
    body = data[: _HEADER.size]
    (crc,) = struct.unpack_from("<I", data, _HEADER.size)
    if zlib.crc32(body) != crc:
        raise FormatError(f"{name}: corrupt header (CRC mismatch)")
    f = _HEADER.unpack(body)
    h = Header(sample_rate=f[3], hop=f[4], codebook_size=f[5], channels=f[6], n_q=f[7], chunk_frames=f[8],
               source_rate=f[9], samples=f[10], source_samples=f[11], frames=f[12], fingerprint=f[13].hex())
    h.check(name)
    return h


class Reader:
    """Validates a .fcdc file on opening (header, footer, index, sizes) and reads its chunks.

    f: a binary file object opened for reading (seekable); name: how errors refer to it.
    """

    def __init__(self, f, name="file"):
        self.f, self.name = f, str(name)
        with self._errors():
            self._open()

    @contextlib.contextmanager
    def _errors(self):
        """Whatever reading raises becomes a FormatError naming the file (an OSError says it could
        not be read)."""
        try:
            yield
        except FormatError:
            raise
        except OSError as exc:
            raise FormatError(f"{self.name}: cannot read ({exc.strerror or exc})") from None
        except (ValueError, OverflowError, struct.error) as exc:
            raise FormatError(f"{self.name}: corrupt ({type(exc).__name__}: {str(exc)[:160]})") from None

    def _open(self):
        f = self.f
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        self.header = h = parse_header(f.read(_HEADER_SIZE), self.name)
        if size < _HEADER_SIZE + _FOOTER.size:
            raise FormatError(f"{self.name}: truncated ({size} bytes; no index)")
        f.seek(size - _FOOTER.size)
        index_offset, n_chunks, index_crc, magic = _FOOTER.unpack(f.read(_FOOTER.size))
        if magic != FOOTER_MAGIC:
            raise FormatError(f"{self.name}: truncated or corrupt (no index at its end)")
        index_bytes = n_chunks * _INDEX_ENTRY.size
        # Sizes are checked against the real file before the index is read, so a corrupt count
        # cannot make us allocate more than the file holds.
        if (n_chunks != h.n_chunks or index_bytes > _MAX_INDEX_BYTES
                or index_offset + index_bytes + _FOOTER.size != size or index_offset < _HEADER_SIZE):
            raise FormatError(f"{self.name}: truncated or corrupt (index of {n_chunks} chunks at byte "
                              f"{index_offset} does not fit a {size}-byte file of {h.frames} frames)")
        f.seek(index_offset)
        index = f.read(index_bytes)
        if zlib.crc32(index) != index_crc:
            raise FormatError(f"{self.name}: corrupt index (CRC mismatch)")
        self.index = [_INDEX_ENTRY.unpack_from(index, i * _INDEX_ENTRY.size) for i in range(n_chunks)]
        offset = _HEADER_SIZE
        for i, (off, frames, _) in enumerate(self.index):
            want = min(h.chunk_frames, h.frames - i * h.chunk_frames)
            if off != offset or frames != want:
                raise FormatError(f"{self.name}: corrupt index (chunk {i}: {frames} frames at byte {off}, "
                                  f"expected {want} at byte {offset})")
            offset += h.chunk_bytes(frames)
        if offset != index_offset:
            raise FormatError(f"{self.name}: corrupt (chunks end at byte {offset}, index starts at {index_offset})")

    def chunk(self, i: int) -> np.ndarray:
        """Codes of chunk i: int64 [channels, n_q, frames]."""
        with self._errors():
            return self._chunk(i)

    def _chunk(self, i):
        h = self.header
        off, frames, crc = self.index[i]
        self.f.seek(off)
        data = self.f.read(h.chunk_bytes(frames))
        if len(data) != h.chunk_bytes(frames) or zlib.crc32(data) != crc:
            raise FormatError(f"{self.name}: corrupt chunk {i} (CRC mismatch)")
        codes = unpack_codes(data, frames * h.channels * h.n_q, h.bits)
        if int(codes.max()) >= h.codebook_size:
            raise FormatError(f"{self.name}: corrupt chunk {i} (a code beyond the codebook's {h.codebook_size})")
        return codes.reshape(frames, h.channels, h.n_q).transpose(1, 2, 0)

    def chunk_of_frame(self, frame: int) -> int:
        return min(max(frame, 0) // self.header.chunk_frames, max(self.header.n_chunks - 1, 0))

    def codes(self) -> np.ndarray:
        """All codes: int64 [channels, n_q, frames]."""
        h = self.header
        out = np.empty((h.channels, h.n_q, h.frames), dtype=np.int64)
        for i in range(h.n_chunks):
            f0 = i * h.chunk_frames
            c = self.chunk(i)
            out[:, :, f0: f0 + c.shape[2]] = c
        return out


def read_header(path) -> Header:
    """The header of the .fcdc file at path (validated with its index)."""
    with _open(path) as f:
        return Reader(f, path).header


def _open(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a .fcdc file") from None
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror})") from None

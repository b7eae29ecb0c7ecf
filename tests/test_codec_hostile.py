"""Hostile .fcdc headers, their CRC recomputed so that only the sizes lie, decoded through
`Codec.decode_file` and `load_codes` + `decode` in a process whose address space is capped: each is
refused with a FormatError naming the file, or decodes to no more than its frames hold, and peak
memory stays within a bound of a valid file's decode (a regression fails on the cap instead of
swapping)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import save_codec

pytestmark = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                                reason="peak RSS is read and reset through /proc (Linux)")

FIELDS = ["magic", "version", "header_size", "sample_rate", "hop", "codebook_size", "channels", "n_q",
          "chunk_frames", "source_rate", "samples", "source_samples", "frames", "fingerprint"]
# Field widths in bits (from the header's struct), for each field's largest value.
WIDTHS = {"sample_rate": 32, "hop": 32, "codebook_size": 32, "channels": 16, "n_q": 16, "chunk_frames": 32,
          "source_rate": 32, "samples": 64, "source_samples": 64, "frames": 64}

_PROBE = textwrap.dedent("""
    import json, resource, struct, sys, zlib
    import torch
    from fastcodec import Codec, FormatError
    from fastcodec.codec import format as fcdc

    ckpt, folder, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    FIELDS = %r

    def mb(key):
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def with_header(data, fields):
        values = dict(zip(FIELDS, fcdc._HEADER.unpack_from(data)))
        values.update(fields)
        body = fcdc._HEADER.pack(*(values[n] for n in FIELDS))
        return body + struct.pack("<I", zlib.crc32(body)) + data[fcdc._HEADER_SIZE:]

    codec = Codec.load(ckpt)
    good, out = folder + "/good.fcdc", folder + "/out.wav"
    torch.manual_seed(0)
    codec.save(codec.encode(0.1 * torch.randn(2, 3 * 8000), 8000), good)
    codec.decode(codec.load_codes(good))
    codec.decode_file(good, out)   # first-call allocations, outside the measure
    reset_peak()
    base = mb("VmRSS")
    codec.decode_file(good, out)
    codec.decode(codec.load_codes(good))
    valid = mb("VmHWM") - base
    data = open(good, "rb").read()
    # Every hostile case below must fit in 1 GiB more address space than the process has now.
    cap = int((mb("VmSize") + 1024) * 2 ** 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    bad = folder + "/bad.fcdc"
    results = []
    for fields in cases:
        with open(bad, "wb") as f:
            f.write(with_header(data, fields))
        for how in ("decode_file", "decode"):
            reset_peak()
            base = mb("VmRSS")
            try:
                if how == "decode_file":
                    n, _ = codec.decode_file(bad, out)
                else:
                    n = codec.decode(codec.load_codes(bad)).shape[-1]
                outcome = "ok"
            except FormatError as exc:
                outcome, n = "FormatError" if "bad.fcdc" in str(exc) else "FormatError without the name", 0
            except BaseException as exc:
                outcome, n = f"{type(exc).__name__}: {str(exc)[:200]}", 0
            results.append({"fields": fields, "how": how, "outcome": outcome, "samples": n,
                            "peak_mb": mb("VmHWM") - base})
    header = fcdc.read_header(good)
    print(json.dumps({"valid_peak_mb": valid, "results": results, "samples": header.samples,
                      "source_samples": header.source_samples}))
""") % FIELDS


def _cases():
    """Every size field at hostile values, and the probe's own cases (source_samples = 2^33 and
    30,000,000 from a small file; samples and frames grown together)."""
    cases = []
    for name, bits in WIDTHS.items():
        for v in sorted({0, 1, 2, 3, 1000, 2 ** (bits - 1), 2 ** bits - 1, 2 ** min(bits - 1, 31) + 1}):
            cases.append({name: v})
    cases += [{"source_samples": 2 ** 33}, {"source_samples": 30_000_000},
              {"samples": 6 * 10 ** 9, "frames": 10 ** 9}, {"samples": 6 * 10 ** 9, "frames": 10 ** 9,
                                                           "source_samples": 6 * 10 ** 9},
              {"chunk_frames": 10 ** 6}, {"channels": 1024}, {"channels": 1025}, {"n_q": 2 ** 16 - 1},
              {"source_rate": 768_000, "source_samples": 2 ** 40}, {"hop": 1, "frames": 24000}]
    return cases


def test_hostile_headers_are_refused_in_bounded_memory(tmp_path):
    save_codec(tmp_path / "c.pt")
    cases = _cases()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "c.pt"), str(tmp_path), json.dumps(cases)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    results, valid = report["results"], report["valid_peak_mb"]
    wrong = [r for r in results if r["outcome"] not in ("FormatError", "ok")]
    assert not wrong, wrong
    # A header that still reads (e.g. source_samples off by one, within the format's slack) may
    # decode, but to no more than its frames hold: 3 s at 8 kHz, give or take a sample.
    for r in results:
        if r["outcome"] == "ok":
            assert r["samples"] <= report["samples"] + 2, r
    refused = sum(r["outcome"] == "FormatError" for r in results)
    worst = max(results, key=lambda r: r["peak_mb"])
    print(f"{len(cases)} hostile headers x 2 decode paths: {refused} refused, {len(results) - refused} decoded "
          f"within the frames' length; valid decode's peak {valid:.1f} MB above its start, the worst hostile "
          f"case's {worst['peak_mb']:.1f} MB ({worst['fields']}, {worst['how']})")
    assert worst["peak_mb"] <= valid + 64, worst
    # The probe's two cases from the issue are refused, not padded out.
    for fields in ({"source_samples": 2 ** 33}, {"source_samples": 30_000_000}):
        assert {r["outcome"] for r in results if r["fields"] == fields} == {"FormatError"}

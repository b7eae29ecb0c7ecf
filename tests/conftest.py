"""Shared fixtures and the tolerance rule for kernel tests.

- Triton runs on CPU tensors through its interpreter when no GPU is visible: TRITON_INTERPRET must
  be set before triton is first imported, hence here, at collection time.
- Every test gets a fresh seed derived from its name (a failure reproduces; inputs never repeat
  across tests) and runs with PyTorch's deterministic mode filling uninitialized memory with NaN,
  so an output element a kernel forgot to write fails the comparison.
- FASTCODEC_REQUIRE="cpp,triton" (set by .ci/run and gpu_suite.sh) turns "backend unavailable"
  from a skip into a failure, so a broken build can never pass as a run of skips.
- FASTCODEC_ONLY_GPU_SKIPS=1 (set by .ci/run) prints the skip count at the end and fails the run
  on any skip that is not a GPU target ("no GPU visible", or a case `needs_gpu` hands to the GPU).
"""
import os
import zlib

import torch

# The static rules unless a run asks for measured 'auto' (FASTCODEC_TUNE=1): deterministic choices.
os.environ.setdefault("FASTCODEC_TUNE", "0")

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # Import it now, under that setting: Triton 3.0 decides at import whether its own @jit helpers
    # (tl.zeros, ...) are interpretable, and a test that sets TRITON_INTERPRET=0 before fastcodec's
    # lazy import would otherwise leave them compiled-only for the whole session.
    try:
        import triton  # noqa: F401
    except ImportError:
        pass

import pytest  # noqa: E402

from fastcodec.ops import _backend  # noqa: E402

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False

REQUIRED = {b.strip() for b in os.environ.get("FASTCODEC_REQUIRE", "").split(",") if b.strip()}

# (backend, device) pairs a compiled kernel can run on.
KERNEL_TARGETS = [("cpp", "cpu"), ("triton", "cpu"), ("cuda", "cuda"), ("triton", "cuda")]


def require_backend(backend: str, device: str):
    """Skip (or fail, when required and the device exists) if `backend` cannot run on `device`."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU visible")
    ok, why = _backend.status(backend, device)
    if not ok:
        # Triton on CPU tensors is the interpreter, which runs only where no GPU is visible.
        expected_here = not (backend == "triton" and device == "cpu" and not _backend.triton_interpreted())
        if backend in REQUIRED and expected_here:
            pytest.fail(f"required backend {backend} unavailable on {device}: {why}")
        pytest.skip(f"{backend} on {device}: {why}")


GPU_SKIPS = ("no GPU visible", "needs a GPU: ")


def needs_gpu(why: str):
    """Skip a case that only a GPU runs in reasonable time (the Triton interpreter would take minutes)."""
    pytest.skip(f"needs a GPU: {why}")


_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason))


def _not_gpu_skips():
    return [(node, why) for node, why in _skipped if not why.startswith(GPU_SKIPS)]


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("FASTCODEC_ONLY_GPU_SKIPS") == "1" and _not_gpu_skips() and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("FASTCODEC_ONLY_GPU_SKIPS") != "1":
        return
    bad = _not_gpu_skips()
    terminalreporter.write_line(f"fastcodec: {len(_skipped)} skipped, {len(_skipped) - len(bad)} of them GPU targets")
    for node, why in bad:
        terminalreporter.write_line(f"fastcodec: a skip that is not a GPU target fails the run: {node}: {why}")


@pytest.fixture(params=KERNEL_TARGETS, ids=[f"{b}-{d}" for b, d in KERNEL_TARGETS])
def target(request):
    backend, device = request.param
    require_backend(backend, device)
    return backend, device


@pytest.fixture(autouse=True)
def _seed_and_poison(request):
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def interpreted(backend, device):
    """The Triton interpreter is ~1000x slower than a GPU: tests shrink their shapes for it."""
    return backend == "triton" and device == "cpu"


def assert_close_to_reference(out, ref_same, ref64, *, factor=2.0, atol_eps=8.0, name="output"):
    """The tolerance rule: |out - ref64| <= factor * |ref_same - ref64| + atol, elementwise max.

    ref_same is the PyTorch reference at out's precision, ref64 the same computed in float64;
    atol is atol_eps machine epsilons of out's dtype times the largest |ref64| (at least 64 for
    float64 outputs), so a reference that happens to be exact does not demand the impossible.
    """
    assert out.shape == ref64.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
    assert out.dtype == ref_same.dtype, f"{name}: dtype {out.dtype} != {ref_same.dtype}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values (unwritten output?)"
    out64, same64 = out.double().cpu(), ref_same.double().cpu()
    ref64 = ref64.double().cpu()
    err = (out64 - ref64).abs().max().item() if out.numel() else 0.0
    ref_err = (same64 - ref64).abs().max().item() if out.numel() else 0.0
    scale = ref64.abs().max().item() if out.numel() else 0.0
    if out.dtype == torch.float64:
        # Nothing is more precise than the float64 reference, so ref_err is 0 and only atol is left;
        # it must allow for sums taken in another order (a different torch release's conv does).
        atol_eps = max(atol_eps, 64.0)
    atol = atol_eps * torch.finfo(out.dtype).eps * max(scale, 1e-30)
    assert err <= factor * ref_err + atol, (
        f"{name}: max error {err:.3e} vs float64 exceeds {factor} x reference error {ref_err:.3e} + atol {atol:.3e}")


def noncontiguous(t):
    """The same values as t in a non-contiguous view (every other element of a wider tensor)."""
    wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    view = wide[..., ::2]
    view.copy_(t)
    assert not view.is_contiguous() or t.shape[-1] <= 1
    return view


# A codec small enough that its tests run in milliseconds: 8 kHz, hop 6, 3 stages of 16 codes.
SMALL_CODEC = dict(sample_rate=8000, channels=4, strides=(2, 3), code_dim=8, n_q=3, codebook_size=16)


def save_codec(path, seed=0, initialized=True, **overrides):
    """Save a checkpoint of a randomly initialised codec (codebooks at the latent's scale) at path;
    returns the model."""
    from fastcodec.nn import CodecConfig, SoundStream
    from fastcodec import checkpoint as ckpt

    cfg = CodecConfig(**{**SMALL_CODEC, **overrides})
    torch.manual_seed(seed)
    m = SoundStream(cfg)
    with torch.no_grad():
        m.quantizer.codebooks.normal_().mul_(0.3)
        m.quantizer.initialized.fill_(initialized)
    ckpt.save(path, {"codec_config": cfg.to_dict(), "model": m.state_dict()})
    return m


@pytest.fixture
def codec_path(tmp_path, monkeypatch):
    """A saved small codec; the CLI's known-models registry kept inside tmp_path."""
    monkeypatch.setenv("FASTCODEC_CACHE_DIR", str(tmp_path / "cache"))
    save_codec(tmp_path / "codec.pt")
    return tmp_path / "codec.pt"


_SWALLOWING_IMPORT = """
import builtins, os, runpy, signal, sys, time
real_import = builtins.__import__
target = sys.argv[2]
def swallowing_import(name, *args, **kwargs):
    if name == target and name not in sys.modules:
        try:  # Ctrl-C inside a library's import that swallows it (as torch's import can)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return real_import(name, *args, **kwargs)
builtins.__import__ = swallowing_import
sys.argv = [sys.argv[1], *sys.argv[3:]]
runpy.run_module(sys.argv[0], run_name="__main__")
"""


def run_interrupted_in_import(package, module, *argv):
    """`python -m PACKAGE ARGV` where Ctrl-C lands, and is swallowed, while MODULE is first
    imported -> the CompletedProcess (text)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _SWALLOWING_IMPORT, package, module, *map(str, argv)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))

"""The dispatch table and measured 'auto' (fastcodec/ops/dispatch.py, tuning.py): the table answers
for every op, backend, device and dtype; the tuner takes the faster of two fakes with known costs
and keeps the static choice inside the margin; the cache survives a round trip, is redone for other
versions, ignores corrupt and truncated files, and keeps what two processes tuning at once wrote;
two gloo ranks agree; candidates run with autocast off; nothing is timed under torch.compile, in a
live stream or with FASTCODEC_TUNE=0; a named backend is never swapped."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import assert_close_to_reference, require_backend
from fastcodec import nn as fnn
from fastcodec import ops
from fastcodec.ops import BackendUnavailable, _backend, dispatch, tuning

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
CPU = torch.device("cpu")


@pytest.fixture
def tuned(tmp_path, monkeypatch):
    """Tuning on, with this test's own cache folder."""
    monkeypatch.setenv("FASTCODEC_TUNE", "1")
    monkeypatch.setenv("FASTCODEC_CACHE_DIR", str(tmp_path / "cache"))
    tuning.forget()
    yield tmp_path / "cache"
    tuning.forget()


def _busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _fake(costs, calls=None):
    """run(backend) that takes costs[backend] seconds (busy, so it is what a timer sees)."""
    def run(backend, *args):
        if calls is not None:
            calls.append(backend)
        _busy(costs[backend])
    return run


def test_the_table_answers_for_every_op_backend_device_and_dtype():
    for op, impls in dispatch.TABLE.items():
        for device in ("cpu", "cuda"):
            for dtype in DTYPES:
                for backend in _backend.BACKENDS:
                    why = dispatch.refusal(op, backend, device, dtype, {"D": 64})
                    assert why is None or (isinstance(why, str) and why), (op, backend, device, dtype)
                    if backend not in impls:
                        assert why == f"{op} has no {backend} implementation"
                    if why is None:
                        assert dispatch.choose(op, backend, torch.device(device), dtype, shape={"D": 64}) == backend
                    else:
                        with pytest.raises(BackendUnavailable, match="cannot run here"):
                            dispatch.choose(op, backend, torch.device(device), dtype, shape={"D": 64})
                order = dispatch.usable(op, device, dtype, {"D": 64})
                assert order == [b for b in dispatch.ORDER.get(device, ()) + ("torch",) if b in order]


def test_auto_is_the_static_rule_without_a_key():
    require_backend("cpp", "cpu")
    assert dispatch.choose("causal_conv1d", "auto", CPU, torch.float32) == "cpp"
    assert dispatch.choose("causal_conv1d", "auto", CPU, torch.bfloat16) == "torch"
    assert dispatch.choose("grouped_conv1d", "auto", CPU, torch.float64) == "torch"
    assert dispatch.choose("causal_conv1d_stream", "auto", CPU, torch.float32) == "cpp"
    with pytest.raises(BackendUnavailable, match="no backend runs causal_conv1d_stream on cpu float64"):
        dispatch.choose("causal_conv1d_stream", "auto", CPU, torch.float64)


def test_decide_needs_the_margin_and_the_rounds():
    assert tuning.decide({"cpp": [2, 2, 2, 2, 2], "torch": [1, 1, 1, 1, 1]}, "cpp") == "torch"
    assert tuning.decide({"cpp": [1, 1, 1, 1, 1], "torch": [0.97, 0.97, 0.97, 0.97, 0.97]}, "cpp") == "cpp"
    # faster in the median, but slower in two rounds of five: noise, the default stays
    assert tuning.decide({"cpp": [2, 2, 2, 1, 1], "torch": [1, 1, 1, 1.5, 1.5]}, "cpp") == "cpp"
    assert tuning.decide({"cpp": [2, 2, 2], "torch": [1, 1, 1], "cuda": [0.5, 0.5, 0.5]}, "cpp") == "cuda"


def test_the_tuner_takes_the_faster_of_two_fakes_and_keeps_the_default_inside_the_margin(tuned):
    assert tuning.choose("fake", CPU, "fake|cpu|float32|a", ["cpp", "torch"], _fake({"cpp": 3e-3, "torch": 1e-3}),
                         ()) == ("torch", True)
    entry = tuning.table()["fake|cpu|float32|a"]
    assert entry["backend"] == "torch" and entry["static"] == "cpp" and entry["ms"]["cpp"] > 2 * entry["ms"]["torch"]
    key = "fake|cpu|float32|b"  # equal costs: the static choice stays
    assert tuning.choose("fake", CPU, key, ["cpp", "torch"], _fake({"cpp": 1e-3, "torch": 1e-3}), ()) \
        == ("cpp", True)
    # Known now: the next call takes the cached choice without timing anything.
    calls = []
    assert tuning.choose("fake", CPU, key, ["cpp", "torch"], _fake({"cpp": 1, "torch": 1}, calls), ()) == ("cpp", True)
    assert calls == []


def test_the_cache_round_trip_versions_and_damaged_files(tuned, monkeypatch):
    run = _fake({"cpp": 3e-3, "torch": 1e-3})
    tuning.choose("fake", CPU, "k1", ["cpp", "torch"], run, ())
    path = tuning.cache_path()
    assert path.parent == tuned and json.loads(path.read_text())["entries"]["k1"]["backend"] == "torch"
    tuning.forget()
    calls = []
    assert tuning.choose("fake", CPU, "k1", ["cpp", "torch"], _fake({"cpp": 0, "torch": 0}, calls), ()) \
        == ("torch", True) and calls == []  # read back from the file
    # Other versions (a new torch, another CPU): another file, measured again.
    real = tuning.versions()
    monkeypatch.setattr(tuning, "versions", lambda: dict(real, torch="9.9"))
    tuning.forget()
    assert tuning.cache_path() != path and tuning.table() == {}
    monkeypatch.setattr(tuning, "versions", lambda: real)
    # A file that claims other versions under this name is not trusted.
    data = json.loads(path.read_text())
    path.write_text(json.dumps(dict(data, versions=dict(real, cpu="another"))))
    tuning.forget()
    with pytest.warns(tuning.TuningWarning, match="not a tuning cache of this machine"):
        assert tuning.table() == {}
    for damaged in (b"{not json", json.dumps(data).encode()[: len(json.dumps(data)) // 2], b"\xff\xfe", b"[]"):
        path.write_bytes(damaged)
        tuning.forget()
        with pytest.warns(tuning.TuningWarning, match="ignored"):
            assert tuning.table() == {}
    # ... and the next measurement replaces it with a good file.
    tuning.choose("fake", CPU, "k2", ["cpp", "torch"], run, ())
    tuning.forget()
    assert set(tuning.table()) == {"k2"}


_WORKER = textwrap.dedent("""
    import sys, time
    from fastcodec.ops import tuning
    import torch
    name, start = sys.argv[1], float(sys.argv[2])
    while time.time() < start:  # both processes begin together, after their imports
        time.sleep(0.001)
    def run(backend, *args):
        end = time.perf_counter() + (0.002 if backend == "cpp" else 0.001)
        while time.perf_counter() < end:
            pass
    for i in range(16):
        tuning.choose("fake", torch.device("cpu"), f"{name}{i}", ["cpp", "torch"], run, ())
""")


def test_two_processes_tuning_at_once_keep_each_others_choices(tuned):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    start = time.time() + 10
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, name, str(start)], env=env, stderr=subprocess.PIPE,
                              text=True) for name in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    tuning.forget()
    assert set(tuning.table()) == {f"{n}{i}" for n in "ab" for i in range(16)}
    assert not list(tuned.glob(".*.partial"))


_RANKS = textwrap.dedent("""
    import json, os, torch
    import torch.distributed as dist
    from fastcodec import ops
    from fastcodec.ops import tuning
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    x, w = torch.randn(2, 8, 3000), torch.randn(8, 8, 7)
    # A rank alone does not time anything under torch.distributed (a collective at an arbitrary
    # call site could deadlock): rank 0 measures inside measuring(), then share() hands its table on.
    ops.causal_conv1d(x, w, activation="elu")
    assert tuning.table() == {}, tuning.table()
    dist.barrier()  # both ranks read the empty cache before rank 0 writes one
    if dist.get_rank() == 0:
        with tuning.measuring():
            ops.causal_conv1d(x, w, activation="elu")
    tuning.share()
    # One file per rank: two ranks printing to one pipe can interleave their lines.
    with open(os.path.join(os.environ["RANKS_OUT"], f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump({k: v["backend"] for k, v in tuning.table().items()}, f, sort_keys=True)
    dist.destroy_process_group()
""")


def test_two_gloo_ranks_agree(tuned, tmp_path):
    require_backend("cpp", "cpu")
    script = tmp_path / "ranks.py"
    script.write_text(_RANKS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1", RANKS_OUT=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    tables = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert len(tables) == 2 and tables[0] == tables[1] and len(tables[0]) == 1


def test_nothing_is_timed_under_torch_compile(tuned):
    require_backend("cpp", "cpu")
    torch._dynamo.reset()
    x, w = torch.randn(1, 4, 300), torch.randn(6, 4, 3)
    f = torch.compile(lambda x, w: ops.causal_conv1d(x, w, activation="elu"), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(f(x, w), ops.causal_conv1d_ref(x, w, activation="elu"))
    assert tuning.table() == {} and not tuning.cache_path().exists()


def test_nothing_is_timed_in_a_live_stream_or_with_tuning_off(tuned, monkeypatch, codec_path):
    from fastcodec import Codec

    codec = Codec.load(codec_path)
    enc = codec.streaming_encoder()
    codes = torch.cat([enc(0.1 * torch.randn(37)) for _ in range(20)] + [enc.flush()], 2)
    dec = codec.streaming_decoder()
    dec(codes)
    assert tuning.table() == {}
    monkeypatch.setenv("FASTCODEC_TUNE", "0")
    codec.decode(codec.encode(0.1 * torch.randn(800), 8000))
    assert tuning.table() == {} and not tuning.cache_path().exists()
    monkeypatch.setenv("FASTCODEC_TUNE", "1")
    codec.decode(codec.encode(0.1 * torch.randn(800), 8000))  # offline: measured and kept
    assert tuning.table() and tuning.cache_path().exists()


def test_a_named_backend_is_never_swapped(tuned):
    require_backend("cpp", "cpu")
    x, w = torch.randn(1, 4, 300, requires_grad=True), torch.randn(6, 4, 3)
    key = tuning.key("causal_conv1d", CPU, torch.float32, (4, 6, 3, 1, 1, None, False, 1, 512, True))
    tuning.table()[key] = {"backend": "torch", "static": "cpp", "ms": {"torch": 1.0, "cpp": 2.0}}
    assert "fastcodec_causal_conv1d" not in type(ops.causal_conv1d(x, w).grad_fn).__name__  # auto: the table's
    assert "fastcodec_causal_conv1d" in type(ops.causal_conv1d(x, w, backend="cpp").grad_fn).__name__
    assert Path(tuning.cache_path()).exists() is False  # nothing measured: the entry was given


def test_a_call_without_gradients_is_timed_without_a_backward(tuned):
    """Under no_grad a weight that requires gradients must not make the timing run a backward the
    call never will (Codec.encode: eval mode, parameters still requiring gradients)."""
    seen = []

    def run(backend, x, w):
        seen.append((torch.is_grad_enabled(), x.requires_grad, w.requires_grad))
        return x * w
    w = torch.randn(5, requires_grad=True)
    with torch.no_grad():
        tuning.choose("fake", CPU, "nograd", ["cpp", "torch"], run, (torch.randn(5), w))
    assert seen and all(not any(s) for s in seen)
    seen.clear()
    tuning.choose("fake", CPU, "grad", ["cpp", "torch"], run, (torch.randn(5), w))
    assert seen and all(s == (True, False, True) for s in seen)


def test_the_callers_tensors_are_untouched(tuned):
    require_backend("cpp", "cpu")
    x = torch.randn(2, 4, 700, requires_grad=True)
    w = torch.randn(6, 4, 5, requires_grad=True)
    before = (x.detach().clone(), w.detach().clone(), x._version, w._version)
    y = ops.causal_conv1d(x, w, activation="elu")  # measured here, forward and backward
    assert tuning.table() and x.grad is None and w.grad is None
    assert torch.equal(x.detach(), before[0]) and torch.equal(w.detach(), before[1])
    assert (x._version, w._version) == before[2:]
    y.sum().backward()  # the caller's graph is intact
    assert x.grad is not None and w.grad is not None


def test_a_candidate_that_fails_leaves_the_static_choice(tuned):
    def run(backend, *args):
        if backend == "torch":
            raise RuntimeError("out of memory (simulated)")
        _busy(1e-4)
    with pytest.warns(tuning.TuningWarning, match="could not time k.*out of memory.*keeps the static choice cpp"):
        assert tuning.choose("fake", CPU, "k", ["cpp", "torch"], run, ()) == ("cpp", False)
    calls = []
    assert tuning.choose("fake", CPU, "k", ["cpp", "torch"], _fake({"cpp": 0, "torch": 0}, calls), ()) \
        == ("cpp", False) and calls == []  # not tried again in this process
    assert "k" not in tuning.table()


def test_the_table_follows_the_cache_folder(tuned, tmp_path, monkeypatch):
    tuning.choose("fake", CPU, "k", ["cpp", "torch"], _fake({"cpp": 3e-3, "torch": 1e-3}), ())
    assert set(tuning.table()) == {"k"}
    monkeypatch.setenv("FASTCODEC_CACHE_DIR", str(tmp_path / "elsewhere"))  # no forget(): noticed
    assert tuning.table() == {} and tuning.cache_path().parent == tmp_path / "elsewhere"
    monkeypatch.setenv("FASTCODEC_CACHE_DIR", str(tuned))
    assert set(tuning.table()) == {"k"}


def test_under_autocast_every_candidate_runs_at_the_calls_dtype(tuned):
    seen = []

    def run(backend, *args):
        seen.append((backend, torch.is_autocast_enabled("cpu")))
        _busy({"cpp": 1e-4, "torch": 5e-4}[backend])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert tuning.choose("fake", CPU, "k", ["cpp", "torch"], run, ()) == ("cpp", True)
    assert {b for b, _ in seen} == {"cpp", "torch"} and not any(on for _, on in seen)
    assert tuning.table()["k"]["backend"] == "cpp"


def test_nothing_is_timed_in_a_stream(tuned):
    require_backend("cpp", "cpu")
    x, w = torch.randn(1, 4, 300), torch.randn(6, 4, 3)
    stream = fnn.CausalConv1dStream(w, stride=1, backend="auto")
    for i in range(0, 300, 7):
        stream(x.double()[:, :, i:i + 7].float())  # (fp32: the native step; no key, nothing timed)
    ops.causal_conv1d_stream(x.double(), w.double(), state=None)  # fp64: the composed path, keyed
    assert tuning.table() == {}


def test_cuda_fp32_keys_say_whether_tf32_is_allowed(monkeypatch):
    """Timings of fp32 on CUDA differ with the TF32 flags (cuDNN's convs and the Triton convs follow
    them), so the flags are part of the key and of a settled choice; nothing else carries them."""
    cuda, matmul = torch.device("cuda"), torch.backends.cuda.matmul
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    saved = matmul.allow_tf32  # (a property of torch's cuBLAS module, which monkeypatch cannot set)
    try:
        matmul.allow_tf32 = True
        assert tuning.tf32_tag(cuda, torch.float32) == " tf32=11"
        matmul.allow_tf32 = False
        assert tuning.tf32_tag(cuda, torch.float32) == " tf32=10"
    finally:
        matmul.allow_tf32 = saved
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert tuning.tf32_tag(cuda, torch.float32) == " tf32=00"
    assert tuning.tf32_tag(cuda, torch.float16) == tuning.tf32_tag(CPU, torch.float32) == ""
    assert tuning.key("causal_conv1d", CPU, torch.float32, (1, 2)).split("|")[1].endswith("t")


def test_a_streams_unmeasured_choice_is_remembered_only_inside_streams(tuned, monkeypatch):
    """Inside no_measuring() an unmeasured key takes the static rule, remembered so that a frame
    does not walk the table again; outside, the same key is still measured, and then streams
    take the measured choice."""
    require_backend("cpp", "cpu")
    calls, walks = [], []
    run = _fake({"cpp": 3e-3, "torch": 5e-4}, calls)
    usable = dispatch.usable
    monkeypatch.setattr(dispatch, "usable", lambda *a, **k: walks.append(1) or usable(*a, **k))

    def choose():
        return dispatch.choose("causal_conv1d", "auto", CPU, torch.float32, key=lambda: ("frames",), run=run)

    with tuning.no_measuring():
        assert [choose() for _ in range(3)] == ["cpp"] * 3
    assert calls == [] and tuning.table() == {}
    assert len(walks) == 1  # the first frame found the static choice; the others remembered it
    assert choose() == "torch" and calls  # measured here, and kept
    calls.clear()
    with tuning.no_measuring():
        assert choose() == "torch"
    assert calls == []


@pytest.mark.parametrize("B,T", [(1, 37), (3, 300)])  # (which one the rule takes depends on the SIMD level)
def test_the_cpu_transposed_conv_variants_are_exact_and_timed_as_candidates(tuned, B, T):
    require_backend("cpp", "cpu")
    from fastcodec.ops import _extension

    g = torch.Generator().manual_seed(B * T)
    x, w = torch.randn(B, 128, T, generator=g), torch.randn(128, 10, 16, generator=g) / 40
    b, a = torch.randn(10, generator=g), torch.rand(10, generator=g) + 0.5
    kw = dict(stride=8, activation="snake")
    ref64 = ops.causal_conv_transpose1d_ref(x.double(), w.double(), b.double(), alpha=a.double(), **kw)
    ref32 = ops.causal_conv_transpose1d_ref(x, w, b, alpha=a, **kw)
    outs = {}
    for variant in ("phases", "gemm"):
        with _extension.transposed_variant(variant):
            outs[variant] = ops.causal_conv_transpose1d(x, w, b, alpha=a, backend="cpp", **kw)
        assert_close_to_reference(outs[variant], ref32, ref64, name=variant)
    assert not torch.equal(outs["phases"], outs["gemm"])  # two summation orders: the switch took effect
    with pytest.raises(KeyError):
        with _extension.transposed_variant("im2col"):
            pass
    assert tuning.table() == {}
    y = ops.causal_conv_transpose1d(x, w, b, alpha=a, **kw)  # 'auto' with tuning on: every candidate timed
    assert_close_to_reference(y, ref32, ref64, name="auto")
    (entry,) = tuning.table().values()
    assert set(entry["ms"]) == {"cpp", "torch", "cpp:phases", "cpp:gemm"} and entry["static"] == "cpp"
    assert dispatch.variants("causal_conv_transpose1d", ["cpp", "torch"], torch.float64) == []  # fp32 only
    assert dispatch.variants("causal_conv1d", ["cpp", "torch"], torch.float32) == []
    assert dispatch.variants("causal_conv_transpose1d", ["cpp"], torch.float32, {"T": 16}) == []  # the stream step


def test_warm_calls_follow_the_cache_folder(tuned, tmp_path, monkeypatch):
    bucket = (1, 2, 3)
    key = tuning.key("causal_conv1d", CPU, torch.float32, bucket)

    def choose(costs):
        return dispatch.choose("causal_conv1d", "auto", CPU, torch.float32, key=lambda: bucket, run=_fake(costs))
    require_backend("cpp", "cpu")
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("FASTCODEC_CACHE_DIR", str(elsewhere))
    tuning._write({key: {"backend": "cpp", "static": "cpp", "ms": {"cpp": 1.0, "torch": 2.0}}})
    monkeypatch.setenv("FASTCODEC_CACHE_DIR", str(tuned))
    tuning.forget()
    assert choose({"cpp": 3e-3, "torch": 1e-3}) == "torch"  # measured here, settled
    assert choose({"cpp": 0, "torch": 0}) == "torch"        # a warm call
    monkeypatch.setenv("FASTCODEC_CACHE_DIR", str(elsewhere))  # no forget(): the warm call notices
    assert choose({"cpp": 0, "torch": 0}) == "cpp"


def test_tune_measures_a_preset_and_fresh_redoes_only_its_device(tuned, capsys):
    import argparse
    import re

    from fastcodec import tune

    cuda_key = "causal_conv1d|cuda NVIDIA H100|float32|1 2 3"
    tuning._write({cuda_key: {"backend": "torch", "static": "triton", "ms": {"torch": 1.0, "triton": 2.0}}})
    tuning.forget()
    counts = []
    for fresh in (False, True):
        args = argparse.Namespace(show=False, device="cpu", preset="tiny", fresh=fresh, batch_size=1,
                                  segment_seconds=0.25)
        assert tune.main(args) == 0
        out = capsys.readouterr().out
        counts.append(int(re.search(r"(\d+) call shapes measured", out).group(1)))
        tuning.forget()
    assert counts[0] > 10 and counts[1] == counts[0]  # --fresh measured every CPU shape again
    assert cuda_key in tuning.table()  # ... and left the other device's entries alone

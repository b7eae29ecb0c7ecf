"""The exported codec under onnxruntime (CPU, 2 threads) beside the package's C++ kernels and its
torch backend: offline encode and decode of 10 s, and the streaming step graphs' time per frame at
1 and 4 frames per call beside the package's streams (the C++ chain) fed the same steps; the
soundstream-24k and tiny presets with random weights (speed does not depend on them).

    pytest benchmarks/bench_onnx.py --benchmark-json out.json
"""
import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from common import ON_GPU, run
from torch.utils.flop_counter import FlopCounterMode

from fastcodec import Codec
from fastcodec.nn import SoundStream, set_backend
from fastcodec.nn.config import preset

if ON_GPU:
    pytest.skip("CPU timings of onnxruntime's CPU provider", allow_module_level=True)
ort = pytest.importorskip("onnxruntime")
from fastcodec.export import export  # noqa: E402  (needs onnx, which the [onnx] extra brings with onnxruntime)
from fastcodec.lite import ort_session  # noqa: E402

SECONDS = 10.0
THREADS = 2
STEP_SECONDS = 1.0  # the streams are timed over one second of audio
PRESETS = ["soundstream-24k", "tiny"]
GRAPH = {"encode": "encoder", "decode": "decoder"}
_tmp = tempfile.TemporaryDirectory(prefix="fastcodec-bench-onnx-")


@functools.lru_cache(None)
def _codec(name):
    torch.manual_seed(0)
    m = SoundStream(preset(name))
    with torch.no_grad():
        m.quantizer.codebooks.normal_().mul_(0.5)
        m.quantizer.initialized.fill_(True)
    return Codec(m)


@functools.lru_cache(None)
def _export(name, frames):
    return export(_codec(name), Path(_tmp.name) / f"{name}-{frames}", step_frames=frames)


def _session(path):
    return ort_session(path, THREADS)


def _flops(fn):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.fixture(autouse=True)
def _threads():
    prev = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(prev)


@pytest.mark.parametrize("impl", ["torch", "cpp", "onnxruntime"])
@pytest.mark.parametrize("op", ["encode", "decode"])
@pytest.mark.parametrize("name", PRESETS)
def test_offline(benchmark, name, op, impl):
    benchmark.group = f"{name} {op} {SECONDS:g} s, {THREADS} threads"
    codec = _codec(name)
    model = codec.model
    x = 0.1 * torch.randn(1, 1, int(SECONDS * codec.sample_rate), generator=torch.Generator().manual_seed(0))
    set_backend(model, "torch")
    with torch.no_grad():
        codes = model.encode(x)
        flops = _flops(lambda: model.encode(x)) if op == "encode" else _flops(lambda: model.decode(codes))
    if impl == "onnxruntime":
        s = _session(_export(name, 1) / f"{GRAPH[op]}.onnx")
        feed = {"audio": x.numpy()} if op == "encode" else {"codes": codes.numpy()}

        def fn():
            return s.run(None, feed)
    else:
        set_backend(model, impl)

        def fn():
            with torch.no_grad():
                return model.encode(x) if op == "encode" else model.decode(codes)
    run(benchmark, fn, flops=flops, bytes_moved=0, impl=impl, op=op, preset=name)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(audio_seconds=SECONDS, rtf=median / SECONDS, x_realtime=SECONDS / median)


@pytest.mark.parametrize("impl", ["cpp stream", "onnxruntime step"])
@pytest.mark.parametrize("frames", [1, 4])
@pytest.mark.parametrize("op", ["encode", "decode"])
@pytest.mark.parametrize("name", PRESETS)
def test_step(benchmark, name, op, frames, impl):
    """One second fed `frames` frames per call: time per frame = the median over the frames."""
    benchmark.group = f"{name} streaming {op}, {frames} frame{'s' * (frames > 1)} per call, {THREADS} threads"
    codec = _codec(name)
    hop = codec.cfg.hop
    n = int(STEP_SECONDS * codec.cfg.frame_rate) // frames * frames
    x = 0.1 * torch.randn(1, n * hop, generator=torch.Generator().manual_seed(1))
    set_backend(codec.model, "cpp")
    codes = codec.encode(x, codec.sample_rate).codes[0][..., :n]  # [C=1, n_q, n]
    if impl == "onnxruntime step":
        s = _session(_export(name, frames) / f"{GRAPH[op]}_step.onnx")
        inputs = s.get_inputs()
        zeros = {i.name: np.zeros([1, *i.shape[1:]], np.float32) for i in inputs[1:]}
        first = inputs[0].name
        chunks = [x.numpy()[None, :, k * hop:(k + frames) * hop] for k in range(0, n, frames)] if op == "encode" \
            else [codes.numpy()[:, :, k:k + frames] for k in range(0, n, frames)]

        def fn():
            states = dict(zeros)
            for c in chunks:
                _, *nxt = s.run(None, {first: c, **states})
                states = dict(zip(zeros, nxt))
    else:
        def fn():
            with torch.no_grad():
                if op == "encode":
                    enc = codec.streaming_encoder()
                    for k in range(0, n, frames):
                        enc(x[:, k * hop:(k + frames) * hop])
                else:
                    dec = codec.streaming_decoder()
                    for k in range(0, n, frames):
                        dec(codes[:, :, k:k + frames])
    run(benchmark, fn, flops=0, bytes_moved=0, impl=impl, op=op, preset=name, frames_per_call=frames)
    benchmark.extra_info.update(frame_ms=benchmark.stats.stats.median / n * 1e3, frames=n)

"""The codec end to end on the CPU: encode and decode speed of the soundstream-24k preset with the
fast backends ('auto': the C++ kernels) and with the torch backend, and of soundstream-24k-lite
(EnCodec's cheaper residual unit) with the fast backends, at 1 and 2 threads, beside
EnCodec 24 kHz at 6 kbps (the `encodec` package, random weights: only speed is compared); and
streaming, one 13.3 ms frame at a time on one thread.

Each model's arithmetic per second of audio (FLOPs counted by torch's FlopCounterMode on the torch
backend, plus EnCodec's LSTM, which it does not count) goes beside its speed, and achieved GFLOP/s
beside the machine's sgemm rate measured in the same run, because the SoundStream preset does
about 3.0x EnCodec's arithmetic: real-time factors alone would compare unlike work. (3.0x is this
suite's own count: 9.3 against 3.1 GFLOP per audio second to encode, 9.2 against 3.0 to decode, in
the measured table of benchmarks/RESULTS.md, "CPU: the codec end to end, and streaming".)

    pytest benchmarks/bench_codec.py --benchmark-json out.json
"""
import functools
import sys
import time
import types

import pytest
import torch
from common import ON_GPU, run
from torch.utils.flop_counter import FlopCounterMode

from fastcodec import Codec
from fastcodec.nn import SoundStream, set_backend
from fastcodec.nn.config import preset

if ON_GPU:
    pytest.skip("CPU real-time factors; the GPU suites are bench_conv/bench_rvq/bench_train", allow_module_level=True)

SECONDS = 5.0
RATE = 24000
STREAM_FRAMES = 75  # one second, frame by frame


@functools.lru_cache(None)
def sgemm_gflops(threads):
    """The machine's fp32 matmul rate at this thread count (2048^2 x 2048^2, best of 5)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    torch.set_num_threads(prev)
    return 2 * 2048 ** 3 / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@functools.lru_cache(None)
def _soundstream(name="soundstream-24k"):
    torch.manual_seed(0)
    m = SoundStream(preset(name))
    with torch.no_grad():  # codebooks at the latent's scale, as after training; speed does not depend on them
        m.quantizer.codebooks.normal_().mul_(0.5)
        m.quantizer.initialized.fill_(True)
    return Codec(m)


def _encodec():
    """EnCodec 24 kHz at 6 kbps with random weights, or a skip when the package is not installed."""
    try:
        import torchaudio  # noqa: F401
    except ImportError:  # encodec imports torchaudio at the top of modules that inference never uses
        stub = types.ModuleType("torchaudio")
        stub.transforms = types.ModuleType("torchaudio.transforms")
        sys.modules.setdefault("torchaudio", stub)
        sys.modules.setdefault("torchaudio.transforms", stub.transforms)
    encodec = pytest.importorskip("encodec")
    m = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    m.set_target_bandwidth(6.0)
    return m.eval()


def _lstm_flops(model, steps):
    """FLOPs of the nn.LSTMs in model over `steps` frames (FlopCounterMode does not count them)."""
    total = 0
    for mod in model.modules():
        if isinstance(mod, torch.nn.LSTM):
            for layer in range(mod.num_layers):
                inp = mod.input_size if layer == 0 else mod.hidden_size
                total += 2 * 4 * mod.hidden_size * (inp + mod.hidden_size) * steps
    return total


def _flops(fn):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _case(impl, op):
    """(fn to time, FLOPs of one call)."""
    x = 0.1 * torch.randn(1, 1, int(SECONDS * RATE))
    if impl == "encodec":
        m = _encodec()
        with torch.no_grad():
            frames = m.encode(x)
        steps = frames[0][0].shape[-1]
        if op == "encode":
            return (lambda: m.encode(x)), _flops(lambda: m.encode(x)) + _lstm_flops(m.encoder, steps)
        return (lambda: m.decode(frames)), _flops(lambda: m.decode(frames)) + _lstm_flops(m.decoder, steps)
    codec = _soundstream("soundstream-24k-lite" if impl == "lite" else "soundstream-24k")
    model = codec.model
    set_backend(model, "torch")
    codes = model.encode(x)
    flops = _flops(lambda: model.encode(x)) if op == "encode" else _flops(lambda: model.decode(codes))
    set_backend(model, "torch" if impl == "torch" else "auto")
    return ((lambda: model.encode(x)) if op == "encode" else (lambda: model.decode(codes))), flops


def _record(benchmark, audio_s, flops, threads):
    median = benchmark.stats.stats.median
    rate = flops / median / 1e9
    benchmark.extra_info.update(audio_seconds=audio_s, x_realtime=audio_s / median, rtf=median / audio_s,
                                gflop_per_audio_s=flops / audio_s / 1e9, sgemm_gflops=sgemm_gflops(threads),
                                fraction_of_sgemm=rate / sgemm_gflops(threads))


@pytest.fixture
def threads(request):
    prev = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(prev)


@pytest.mark.parametrize("impl", ["torch", "fast", "lite", "encodec"])
@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("op", ["encode", "decode"])
def test_offline(benchmark, op, threads, impl):
    benchmark.group = f"codec {op} {SECONDS:g} s at 24 kHz, {threads} thread{'s' * (threads > 1)}"
    fn, flops = _case(impl, op)
    with torch.no_grad():
        run(benchmark, fn, flops=flops, bytes_moved=0, impl=impl, op=op)
    _record(benchmark, SECONDS, flops, threads)


@pytest.mark.parametrize("impl", ["torch", "fast"])
@pytest.mark.parametrize("threads", [1], indirect=True)
@pytest.mark.parametrize("op", ["encode", "decode"])
def test_streaming(benchmark, op, threads, impl):
    """One second fed one 320-sample frame (13.3 ms) at a time: the per-frame latency is the median
    over the frame count, and the throughput is compared with offline coding of the same second."""
    benchmark.group = f"codec streaming {op}, one frame per call, {threads} thread"
    codec = _soundstream()
    set_backend(codec.model, "torch" if impl == "torch" else "auto")
    hop = codec.cfg.hop
    x = 0.1 * torch.randn(1, STREAM_FRAMES * hop)
    codes = codec.encode(x, RATE).codes[0]

    def stream_encode():
        enc = codec.streaming_encoder()
        for k in range(STREAM_FRAMES):
            enc(x[:, k * hop:(k + 1) * hop])

    def stream_decode():
        dec = codec.streaming_decoder()
        for k in range(STREAM_FRAMES):
            dec(codes[:, :, k:k + 1])

    fn = stream_encode if op == "encode" else stream_decode
    offline = (lambda: codec.encode(x, RATE)) if op == "encode" else (lambda: codec.model.decode(codes[None][0]))
    set_backend(codec.model, "torch")
    flops = _flops(offline)
    set_backend(codec.model, "torch" if impl == "torch" else "auto")
    with torch.no_grad():
        offline()
        offline_s = min(_timed(offline) for _ in range(5))
        run(benchmark, fn, flops=flops, bytes_moved=0, impl=impl, op=op, frames=STREAM_FRAMES)
    _record(benchmark, STREAM_FRAMES * hop / RATE, flops, threads)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(frame_latency_ms=median / STREAM_FRAMES * 1e3, offline_seconds=offline_s,
                                stream_vs_offline_throughput=offline_s / median)

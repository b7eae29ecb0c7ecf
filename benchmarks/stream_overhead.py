"""Where a streamed frame's time goes: `Codec.streaming_encoder()` / `streaming_decoder()` fed one
frame per call on one thread, against offline coding of the same audio, and split into the native
kernels' time and what is left outside them (Python, dispatch, checks, allocation).

    python benchmarks/stream_overhead.py [--presets tiny soundstream-24k] [--seconds 2] [--rounds 7]

Per preset and direction it prints, as medians over interleaved rounds: the stream's time per
frame, the offline time per frame, their ratio (stream throughput as a share of offline), the
kernels' time per frame (the encoder or decoder chain's C++ step and the RVQ search or lookup,
called directly on the same inputs) and the rest, "outside the kernels" (the median of each
round's stream - kernels difference). The CPU codec path (fp32, cpp backend). It only uses
attributes both the old and the new streaming designs have, so the same file measures a checkout
before and after a change (run it with that checkout first on PYTHONPATH).
"""
import argparse
import statistics
import time

import torch


def measure(name, seconds, rounds):
    from fastcodec import Codec
    from fastcodec.nn import SoundStream, preset

    torch.manual_seed(0)
    model = SoundStream(preset(name)).eval()
    with torch.no_grad():
        model.quantizer.codebooks.normal_().mul_(0.5)
    codec = Codec(model)
    rate, hop = codec.sample_rate, codec.cfg.hop
    frames = int(seconds * rate) // hop
    x = 0.1 * torch.randn(1, frames * hop)
    codes = codec.encode(x, rate).codes[0]  # [1, n_q, frames]
    q = model.quantizer
    out = {}

    def stream_encode():
        enc = codec.streaming_encoder()
        for k in range(frames):
            enc(x[:, k * hop:(k + 1) * hop])

    def stream_decode():
        dec = codec.streaming_decoder()
        for k in range(frames):
            dec(codes[:, :, k:k + 1])

    # The kernels alone, on the inputs a stream gives them: the chain's C++ step per frame (its
    # states carried as in the stream) and the search or lookup of one frame's row.
    def kernels_encode():
        enc = model.encoder.stream()
        chain = enc.chain
        with torch.no_grad():
            enc(torch.zeros(1, 1, 0))  # builds the native chain
            step = chain._native.step
            xs = [torch.nn.functional.pad(x[None, :, k * hop:(k + 1) * hop], (1 if k == 0 else 0, 0))
                  for k in range(frames)]
            z = model.encoder(x[None])
            rows = z.transpose(1, 2).reshape(-1, z.shape[1]).contiguous()
            rows = [rows[k:k + 1] for k in range(frames)]
            n_q = q.cfg.n_q
            from fastcodec.ops import weight_cache

            def run():
                with weight_cache():
                    for k in range(frames):
                        step(xs[k])
                        torch.ops.fastcodec.rvq_encode(rows[k], q.codebooks, n_q)
            return run

    def kernels_decode():
        dec = model.decoder.stream()
        with torch.no_grad():
            dec(torch.zeros(1, q.cfg.code_dim, 0))
            step = dec.chain._native.step
            zs = [q.decode(codes[:, :, k:k + 1]) for k in range(frames)]
            flat = [codes[:, :, k:k + 1].transpose(1, 2).reshape(1, -1).contiguous() for k in range(frames)]
            from fastcodec.ops import weight_cache

            def run():
                with weight_cache():
                    for k in range(frames):
                        torch.ops.fastcodec.rvq_decode(flat[k], q.codebooks)
                        step(zs[k])
            return run

    with torch.no_grad():
        for op, stream, offline, kernels in (
                ("encode", stream_encode, lambda: codec.encode(x, rate), kernels_encode()),
                ("decode", stream_decode, lambda: model.decode(codes), kernels_decode())):
            # Rounds interleave the three; "outside" is the median of each round's paired
            # difference stream - kernels, which drifts in this box's speed cancel.
            for fn in (stream, offline, kernels):
                fn()
            t = {"stream": [], "offline": [], "kernels": []}
            for _ in range(rounds):
                for name, fn in (("stream", stream), ("offline", offline), ("kernels", kernels)):
                    t0 = time.perf_counter()
                    fn()
                    t[name].append((time.perf_counter() - t0) / frames)
            med = {k: statistics.median(v) for k, v in t.items()}
            outside = statistics.median(a - b for a, b in zip(t["stream"], t["kernels"]))
            out[op] = dict(stream_ms=1e3 * med["stream"], offline_ms=1e3 * med["offline"],
                           share=med["offline"] / med["stream"], kernels_ms=1e3 * med["kernels"],
                           outside_ms=1e3 * outside)
    return hop / rate, out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "soundstream-24k"])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(1)
    import fastcodec

    print(f"fastcodec from {fastcodec.__file__}; torch {torch.__version__}; 1 thread")
    print("| preset | op | frame | stream ms/frame | offline ms/frame | stream/offline throughput | "
          "kernels ms/frame | outside the kernels ms/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.presets:
        frame_s, out = measure(name, args.seconds, args.rounds)
        for op, r in out.items():
            print(f"| {name} | {op} | {1e3 * frame_s:.1f} ms | {r['stream_ms']:.3f} | {r['offline_ms']:.3f} | "
                  f"{100 * r['share']:.0f}% | {r['kernels_ms']:.3f} | {r['outside_ms']:.3f} |")


if __name__ == "__main__":
    main()

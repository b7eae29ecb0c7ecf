"""The op shapes fastcodec is tuned for, shared by the benchmarks and the kernel report.

SoundStream-24k (C=32 base channels, strides 2, 4, 5, 8, 24 kHz): input conv k7 1->32; four
encoder blocks at C*2^i channels (T = 24000, 12000, 3000, 600 per second of audio), each three
residual units (k7 conv with dilation 1, 3, 9 and ELU, then a 1x1 conv plus the skip) and a
downsampling conv k=2*stride to twice the channels; an output conv k3 512->128 at 75 Hz. The
decoder mirrors it with causal transposed convs k=2*stride.
"""
import math

C, STRIDES, RATE, CODE_DIM = 32, (2, 4, 5, 8), 24000, 128


def encoder_layers():
    """[(name, Cin, Cout, K, stride, dilation, T per second, activation, residual)]."""
    layers = [("enc.in k7 1->32", 1, C, 7, 1, 1, RATE, None, False)]
    t, c = RATE, C
    for i, s in enumerate(STRIDES):
        for d in (1, 3, 9):
            layers.append((f"enc.b{i} ru k7 d{d} {c}", c, c, 7, 1, d, t, "elu", False))
        layers.append((f"enc.b{i} ru 1x1 {c} +res", c, c, 1, 1, 1, t, None, True))
        layers.append((f"enc.b{i} down k{2 * s} s{s} {c}->{2 * c}", c, 2 * c, 2 * s, s, 1, t, "elu", False))
        t, c = t // s, 2 * c
    layers.append((f"enc.out k3 {c}->{CODE_DIM}", c, CODE_DIM, 3, 1, 1, t, None, False))
    return layers


def decoder_up_layers():
    """[(name, Cin, Cout, K, stride, T_in per second)]: the transposed convs."""
    layers, t, c = [], RATE // math.prod(STRIDES), C * 2 ** len(STRIDES)
    for s in reversed(STRIDES):
        layers.append((f"dec up k{2 * s} s{s} {c}->{c // 2}", c, c // 2, 2 * s, s, t))
        t, c = t * s, c // 2
    return layers


# (name, N, Q, K, D): training batches (16 x 75 frames, and 10x that), factorized DAC-like codes,
# and a large inference batch.
RVQ_SHAPES = [
    ("train N1200 Q8 K1024 D128", 1200, 8, 1024, 128),
    ("train N12000 Q8 K1024 D128", 12000, 8, 1024, 128),
    ("dac N12000 Q9 K1024 D8", 12000, 9, 1024, 8),
    ("dac N12000 Q32 K1024 D8", 12000, 32, 1024, 8),
]


def rvq_large(on_gpu: bool):
    n = 1_000_000 if on_gpu else 100_000
    return (f"large N{n} Q8 K1024 D128", n, 8, 1024, 128)

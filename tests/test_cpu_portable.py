"""The CPU kernels below the host's widest SIMD level - the portable loops (FASTCODEC_CPU_SIMD=0)
and, on an AVX-512 host, the AVX2 ones (=avx2) - agree with the reference like the default ones
do. Each runs in a fresh process: the level is chosen once per process."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastcodec
from conftest import require_backend

CHECK = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, sys.argv[1])
    from conftest import assert_close_to_reference
    from fastcodec import ops
    torch.manual_seed(0)
    for act in (None, "elu", "silu", "leaky_relu", "snake"):
        x, w = torch.randn(2, 5, 77, dtype=torch.float64), torch.randn(6, 5, 4, dtype=torch.float64) / 5
        b, a = torch.randn(6, dtype=torch.float64), torch.rand(6, dtype=torch.float64) + 0.5
        kw = dict(stride=2, dilation=3, activation=act, alpha=a if act == "snake" else None)
        ref64 = ops.causal_conv1d_ref(x, w, b, **kw)
        f = lambda t: None if t is None else t.float()
        out = ops.causal_conv1d(x.float(), w.float(), b.float(), backend="cpp", **dict(kw, alpha=f(kw["alpha"])))
        assert_close_to_reference(out, ops.causal_conv1d_ref(x.float(), w.float(), b.float(),
                                  **dict(kw, alpha=f(kw["alpha"]))), ref64)
        wt = torch.randn(5, 3, 8, dtype=torch.float64) / 5
        kwt = dict(stride=4, activation=act, alpha=kw["alpha"][:3] if act == "snake" else None)
        ref64 = ops.causal_conv_transpose1d_ref(x, wt, **kwt)
        kwt32 = dict(kwt, alpha=f(kwt["alpha"]))
        out = ops.causal_conv_transpose1d(x.float(), wt.float(), backend="cpp", **kwt32)
        assert_close_to_reference(out, ops.causal_conv_transpose1d_ref(x.float(), wt.float(), **kwt32), ref64)
    for T in (12, 17, 40, 60, 75, 96, 151, 300):  # every micro-tile width (see test_conv_tile_widths_cpp)
        x, w = torch.randn(2, 6, T, dtype=torch.float64), torch.randn(9, 6, 3, dtype=torch.float64) / 4
        out = ops.causal_conv1d(x.float(), w.float(), dilation=2, activation="elu", backend="cpp")
        assert_close_to_reference(out, ops.causal_conv1d_ref(x.float(), w.float(), dilation=2, activation="elu"),
                                  ops.causal_conv1d_ref(x, w, dilation=2, activation="elu"))
    for Cin, K, s, T in ((200, 1, 1, 100), (96, 8, 4, 300)):  # several channel blocks (test_conv_channel_blocks_cpp)
        x, w = torch.randn(2, Cin, T, dtype=torch.float64), torch.randn(7, Cin, K, dtype=torch.float64) / Cin ** 0.5
        out = ops.causal_conv1d(x.float(), w.float(), stride=s, backend="cpp")
        assert_close_to_reference(out, ops.causal_conv1d_ref(x.float(), w.float(), stride=s),
                                  ops.causal_conv1d_ref(x, w, stride=s))
    with torch.no_grad(), ops.weight_cache():  # the skinny product's portable micro-kernels
        for T in (5, 50):
            x, w = torch.randn(1, 4, T, dtype=torch.float64), torch.randn(43, 4, 3, dtype=torch.float64) / 4
            out = ops.causal_conv1d(x.float(), w.float(), dilation=2, backend="cpp")
            assert_close_to_reference(out, ops.causal_conv1d_ref(x.float(), w.float(), dilation=2),
                                      ops.causal_conv1d_ref(x, w, dilation=2))
            wt = torch.randn(4, 5, 9, dtype=torch.float64) / 4
            out = ops.causal_conv_transpose1d(x[..., :7].float(), wt.float(), stride=4, backend="cpp")
            assert_close_to_reference(out, ops.causal_conv_transpose1d_ref(x[..., :7].float(), wt.float(), stride=4),
                                      ops.causal_conv_transpose1d_ref(x[..., :7], wt, stride=4))
        for Cout in (5, 20, 43, 75, 107):  # every row count and leftover panel count of the skinny tiles
            w = torch.randn(Cout, 3, 2, dtype=torch.float64) / 2
            for n in list(range(1, 10)) + [14, 17]:
                x = torch.randn(1, 3, n + 1, dtype=torch.float64)
                out = ops.causal_conv1d(x.float(), w.float(), backend="cpp")
                assert_close_to_reference(out, ops.causal_conv1d_ref(x.float(), w.float()), ops.causal_conv1d_ref(x, w))
    for B, G, cin, cout, K, s, p, T in ((2, 3, 4, 5, 41, 4, 20, 97), (1, 2, 3, 2, 9, 2, 1, 30)):  # grouped_conv1d
        x64 = torch.randn(B, G * cin, T, dtype=torch.float64, requires_grad=True)
        w64 = (torch.randn(G * cout, cin, K, dtype=torch.float64) / (cin * K) ** 0.5).requires_grad_(True)
        conf = dict(stride=s, padding=p, groups=G)
        ref64 = ops.grouped_conv1d_ref(x64, w64, **conf)
        gy = torch.randn(ref64.shape, dtype=torch.float64)
        ref64.backward(gy)
        outs = []
        for impl in ("cpp", "torch"):
            x32, w32 = (t.detach().float().requires_grad_(True) for t in (x64, w64))
            y = ops.grouped_conv1d(x32, w32, backend=impl, **conf)
            y.backward(gy.float())
            outs.append((y.detach(), x32.grad, w32.grad))
        for o, r_same, r64 in zip(outs[0], outs[1], (ref64.detach(), x64.grad, w64.grad)):
            assert_close_to_reference(o, r_same, r64)
    for Cin, Cout, T in ((7, 5, 37), (3, 4, 1030)):  # conv1d_weight_grad: every tile remainder, masked tails
        x64, gz64 = torch.randn(2, Cin, T, dtype=torch.float64), torch.randn(2, Cout, T, dtype=torch.float64)
        refs = []
        for x_, g_ in ((x64.float(), gz64.float()), (x64, gz64)):
            w_ = torch.zeros(Cout, Cin, 3, dtype=x_.dtype, requires_grad=True)
            torch.nn.functional.conv1d(torch.nn.functional.pad(x_, (4, 0)), w_, dilation=2).backward(g_)
            refs.append(w_.grad)
        out = torch.ops.fastcodec.conv1d_weight_grad(gz64.float(), x64.float(), 3, 2, 4)
        assert_close_to_reference(out, *refs)
    xv, cbs = torch.randn(301, 20), torch.randn(3, 50, 20)
    codes, q = ops.rvq_encode(xv, cbs, backend="cpp")
    ref_codes, ref_q = ops.rvq_encode_ref(xv, cbs)
    assert (codes == ref_codes).float().mean() > 0.99 and torch.equal(ops.rvq_decode(codes, cbs), q)
    from test_vq import assert_rows_alone_match_block  # the searches for blocks of 1-4 rows
    for K in (25, 72, 1024):
        assert_rows_alone_match_block(K)
    from fastcodec.ops import _extension
    print("simd", _extension.cpu_simd_level())
""")


def _run(tmp_path, script, simd):
    path = tmp_path / "check.py"
    path.write_text(script)
    root = str(Path(fastcodec.__file__).resolve().parent.parent)
    env = dict(os.environ, FASTCODEC_CPU_SIMD=simd)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(path), str(Path(__file__).parent)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.parametrize("simd, level", [("0", "portable"), ("avx2", "avx2")])
def test_capped_simd_kernels_match_reference(tmp_path, simd, level):
    require_backend("cpp", "cpu")
    from fastcodec.ops import _extension

    if level == "avx2" and _extension.cpu_simd_level() == "portable":
        pytest.skip("this CPU has no AVX2: its kernels cannot run here (the portable ones are tested above)")
    r = _run(tmp_path, CHECK, simd)
    assert r.returncode == 0 and f"simd {level}" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def test_unknown_simd_level_is_a_clear_error(tmp_path):
    require_backend("cpp", "cpu")
    script = textwrap.dedent("""
        import torch
        from fastcodec import ops
        try:
            ops.causal_conv1d(torch.randn(1, 2, 40), torch.randn(3, 2, 3), backend="cpp")
        except RuntimeError as e:
            print("error:", e)
    """)
    r = _run(tmp_path, script, "avx1024")
    assert r.returncode == 0 and "FASTCODEC_CPU_SIMD='avx1024' is not one of" in r.stdout, r.stdout + r.stderr

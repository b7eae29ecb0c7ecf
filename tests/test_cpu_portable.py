"""The portable (non-AVX2) CPU kernels, forced with FASTCODEC_CPU_SIMD=0 in a fresh process (the
choice is made once per process), agree with the reference like the AVX2 ones do."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
    xv, cbs = torch.randn(301, 20), torch.randn(3, 50, 20)
    codes, q = ops.rvq_encode(xv, cbs, backend="cpp")
    ref_codes, ref_q = ops.rvq_encode_ref(xv, cbs)
    assert (codes == ref_codes).float().mean() > 0.99 and torch.equal(ops.rvq_decode(codes, cbs), q)
    print("portable ok")
""")


def test_portable_kernels_match_reference(tmp_path):
    require_backend("cpp", "cpu")
    script = tmp_path / "portable.py"
    script.write_text(CHECK)
    root = str(Path(fastcodec.__file__).resolve().parent.parent)
    env = dict(os.environ, FASTCODEC_CPU_SIMD="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, str(script), str(Path(__file__).parent)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0 and "portable ok" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]

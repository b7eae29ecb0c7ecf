"""The searches' fast mode (mode='fast').

On Triton with fp32 inputs it ranks codes by TF32 products and re-checks the close ones in fp32;
every other backend runs the exact search. Either way the codes obey exact mode's rule
(test_vq.py: the chosen code's float64 distance is within TIE_RTOL of the nearest's). Besides
random inputs, two constructions force the paths random data rarely reaches: codes that TF32
cannot tell apart but fp32 can (the re-check must decide), and more such codes than a row's
candidate list holds (the exact fallback must decide). The Triton interpreter drops the low
mantissa bits itself, so these run for real on CPU.
"""
import pytest
import torch

from conftest import interpreted, needs_gpu, noncontiguous, require_backend
from fastcodec import ops
from test_vq import SMALL_VQ, _recon_error, assert_nearest

TRITON_TARGETS = [("triton", "cpu"), ("triton", "cuda")]
FAST_SHAPES = [(1, 1, 2), (7, 2, 8), (97, 300, 10), (69, 40, 100), (33, 64, 128), (3, 5, 256),
               (4097, 1024, 128), (20000, 1024, 8)]


@pytest.fixture(params=TRITON_TARGETS, ids=[f"{b}-{d}" for b, d in TRITON_TARGETS])
def triton_target(request):
    require_backend(*request.param)
    return request.param


def _vq():
    from fastcodec.ops.triton import vq

    return vq


def _needs_fast_kernels():
    """For tests of what only the re-check can do (separate codes closer than the expanded
    distance's rounding): under Triton 3.0/3.1 fast mode is the exact search, which need not."""
    vq = _vq()
    if not vq.fast_available():
        need = ".".join(map(str, vq.FAST_MIN_TRITON))
        pytest.skip(f"fast mode needs Triton >= {need}; this one runs the exact search")


@pytest.mark.parametrize("shape", FAST_SHAPES, ids=str)
def test_fast_vq_nearest_obeys_the_rule(target, shape):
    backend, device = target
    N, K, D = shape
    if interpreted(backend, device) and N * K * D > SMALL_VQ:
        needs_gpu("too slow for the Triton interpreter")
    x = torch.randn(N, D, device=device)
    cb = torch.randn(K, D, device=device)
    index, sqdist = ops.vq_nearest(x, cb, backend=backend, mode="fast")
    assert sqdist.dtype == torch.float32
    assert_nearest(x, cb, index, sqdist)


@pytest.mark.parametrize("N,Q,K,D", [(1, 1, 2, 8), (7, 8, 1, 2), (70, 4, 64, 20), (129, 3, 1024, 128)])
def test_fast_rvq_obeys_the_rule(target, N, Q, K, D):
    backend, device = target
    if interpreted(backend, device) and N * Q * K * D > SMALL_VQ * 4:
        needs_gpu("too slow for the Triton interpreter")
    x = noncontiguous(torch.randn(N, D, device=device))
    cbs = torch.randn(Q, K, D, device=device) * (0.6 ** torch.arange(Q, device=device)).view(-1, 1, 1)
    codes, q = ops.rvq_encode(x, cbs, backend=backend, mode="fast")
    assert codes.shape == (N, Q) and codes.dtype == torch.int64
    assert_nearest(x, cbs[0], codes[:, 0], None)
    assert _recon_error(x, q) <= _recon_error(x, ops.rvq_encode_ref(x, cbs)[1]) * 1.01 + 1e-9
    assert torch.equal(ops.rvq_decode(codes, cbs, backend=backend), q)
    codes_r, res = ops.rvq_residuals(x, cbs, backend=backend, mode="fast")
    assert torch.equal(codes_r, codes)
    assert torch.equal(res[:, 0], x)
    for i in range(Q):
        assert torch.equal(res[:, i + 1], res[:, i] - cbs[i][codes[:, i]]), f"stage {i}"
        assert_nearest(res[:, i], cbs[i], codes[:, i], None)  # each stage's own search is a true nearest


def _tf32_twins(n_codes, n_rows, D, device):
    """Codes base + e_j * s whose differences lie below TF32's resolution (base entries in [1, 2):
    one TF32 step is 2^-10 there, the offsets reach 2e-4) but far above fp32's, and rows
    base + t_i * s, each nearest to a known code. Far decoys fill the rest of a tile."""
    base = torch.rand(D) + 1.0
    s = torch.randint(0, 2, (D,)).float() * 2 - 1
    offsets = torch.linspace(0, 2e-4, n_codes)
    twins = base + offsets[:, None] * s
    decoys = torch.randn(2 * n_codes, D) * 3
    cb = torch.cat([decoys[:n_codes], twins, decoys[n_codes:]])
    target = torch.randint(0, n_codes, (n_rows,))
    x = base + offsets[target][:, None] * s
    return x.to(device), cb.to(device), target + n_codes


def test_fast_rechecks_codes_tf32_cannot_separate(triton_target):
    """Three twins (fewer than a row's candidate list): TF32 sees them as one code, so only the
    fp32 re-check can pick the right one for each row."""
    _needs_fast_kernels()
    backend, device = triton_target
    x, cb, nearest = _tf32_twins(3, 40, 32, device)
    index, sqdist = ops.vq_nearest(x, cb, backend=backend, mode="fast")
    assert index.cpu().tolist() == nearest.tolist()
    assert_nearest(x, cb, index, sqdist)


def test_fast_falls_back_when_the_candidate_list_overflows(triton_target):
    """Three times more twins than the candidate list holds: most rows' nearest twin cannot be on
    their list, so the exact fallback has to find it."""
    _needs_fast_kernels()
    backend, device = triton_target
    m = _vq().FAST_LIST
    x, cb, nearest = _tf32_twins(3 * m, 40, 32, device)
    index, _ = ops.vq_nearest(x, cb, backend=backend, mode="fast")
    assert index.cpu().tolist() == nearest.tolist()
    codes, _ = ops.rvq_encode(x, cb[None].repeat(2, 1, 1), backend=backend, mode="fast")
    assert codes[:, 0].cpu().tolist() == nearest.tolist()


def test_fast_duplicates_go_to_the_lowest_index(triton_target):
    backend, device = triton_target
    base = torch.randn(10, 8)
    cb = torch.cat([base] * 3).to(device)  # each code 3 times, and 30 > the candidate list
    x = base[[4, 2, 9]].to(device)
    assert ops.vq_nearest(x, cb, backend=backend, mode="fast")[0].tolist() == [4, 2, 9]
    cb = base[[0] * 20 + [1]].to(device)  # 20 copies of the nearest, more than a list holds
    assert ops.vq_nearest(base[[0, 1]].to(device), cb, backend=backend, mode="fast")[0].tolist() == [0, 20]


def _tf32_truncate(t):
    return (t.view(torch.int32) & -8192).view(torch.float32)  # keep 10 mantissa bits


@pytest.mark.parametrize("D", [2, 8, 128, 256])
def test_fast_error_bound_holds_and_is_tight(D):
    """fast_error_terms bounds |tf32 distance - exact distance| for random and for worst-case
    inputs (every entry just below a TF32 step, so truncation errors add up coherently), and that
    worst case comes within a small factor of it: the bound is neither broken nor vacuous."""
    pytest.importorskip("triton")
    a, b = _vq().fast_error_terms(D)
    step = 2.0 ** -10
    worst = torch.full((1, D), 1.0 + step * 0.999)
    for r, c in [(torch.randn(64, D), torch.randn(256, D) * 3), (worst, worst * 1.5), (worst, -worst)]:
        c_sq = c.pow(2).sum(1)
        approx = c_sq[None] - 2.0 * (_tf32_truncate(r) @ _tf32_truncate(c).T)
        exact = c.double().pow(2).sum(1)[None] - 2.0 * (r.double() @ c.double().T)
        bound = a * r.double().norm(dim=1)[:, None] * c.double().norm(dim=1)[None] + b * c.double().pow(2).sum(1)[None]
        ratio = ((approx.double() - exact).abs() / bound).max().item()
        assert ratio <= 1.0, f"tf32 error exceeds the bound ({ratio:.2f} x)"
    assert ratio > 0.15, f"the worst case reaches only {ratio:.3f} of the bound: is it still tight?"


def test_search_mode_is_checked(target):
    backend, device = target
    x, cb = torch.randn(3, 4, device=device), torch.randn(5, 4, device=device)
    for bad in ("tf32", "", None, 1):
        with pytest.raises(ValueError, match="mode must be one of"):
            ops.vq_nearest(x, cb, backend=backend, mode=bad)
        with pytest.raises(ValueError, match="mode must be one of"):
            ops.rvq_encode(x, cb[None], backend=backend, mode=bad)


def test_fast_ops_opcheck(triton_target):
    backend, device = triton_target
    from fastcodec.ops.triton import OPS

    xv, cbs = torch.randn(13, 6, device=device), torch.randn(3, 7, 6, device=device)
    torch.library.opcheck(OPS["vq_nearest_fast"], (xv, cbs[0]))
    for n_q in (2, 3):
        torch.library.opcheck(OPS["rvq_encode_fast"], (xv, cbs, n_q))
        torch.library.opcheck(OPS["rvq_residuals_fast"], (xv, cbs, n_q))

"""vq_nearest, rvq_encode and rvq_decode on every compiled backend vs the reference.

Exactness rule: a chosen index may differ from the reference's only where the distances tie: the
float64 distance at the chosen code is within TIE_RTOL (relative) of the float64 minimum. Whole
RVQs are compared by reconstruction error, since ties cascade into different but equally good
codes.
"""
import sys

import pytest
import torch

from conftest import interpreted, needs_gpu, noncontiguous, require_backend
from fastcodec import ops
from fastcodec.ops import dispatch

TIE_RTOL = 1e-5

# (N, K, D): sizes not multiples of any tile, K = 1 and 2, D = 2 and odd.
VQ_SHAPES = [(1, 1, 2), (7, 2, 8), (1000, 1000, 100), (4097, 1024, 8), (33, 4096, 128), (5, 7, 512)]
SMALL_VQ = 300_000  # largest N*K*D the Triton interpreter gets


def _dtypes(backend, device):
    if device == "cuda":
        return [torch.float32] + ([torch.float64] if backend == "cuda" else [])
    return [torch.float32, torch.float64] if backend == "cpp" else [torch.float32]


def _dist64(x, codebook):
    x, c = x.double().cpu(), codebook.double().cpu()
    return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1) if x.shape[0] * c.shape[0] * c.shape[1] < 5e7 \
        else torch.cdist(x, c) ** 2


def assert_nearest(x, codebook, index, sqdist):
    """index is a true argmin (within the tie tolerance) and sqdist is its distance."""
    assert index.dtype == torch.int64 and index.shape == (x.shape[0],)
    index = index.cpu()
    assert ((index >= 0) & (index < codebook.shape[0])).all(), "index out of range (unwritten output?)"
    d = _dist64(x, codebook)
    chosen = d.gather(1, index[:, None]).squeeze(1)
    best = d.min(1).values
    bad = chosen > best * (1 + TIE_RTOL) + 1e-12
    assert not bad.any(), f"{int(bad.sum())} rows chose a code farther than the nearest (first row {bad.nonzero()[0]})"
    if sqdist is not None:
        torch.testing.assert_close(sqdist.double().cpu(), chosen, rtol=1e-4, atol=1e-5 * float(best.max() + 1))


@pytest.mark.parametrize("shape", VQ_SHAPES, ids=str)
def test_vq_nearest(target, shape):
    backend, device = target
    N, K, D = shape
    if interpreted(backend, device) and N * K * D > SMALL_VQ:
        needs_gpu("too slow for the Triton interpreter")
    for dtype in _dtypes(backend, device):
        x = torch.randn(N, D, dtype=dtype, device=device)
        cb = torch.randn(K, D, dtype=dtype, device=device)
        if dispatch.refusal("vq_nearest", backend, device, dtype, {"D": D}):  # triton fp32 beyond D = 256
            with pytest.raises(ops.BackendUnavailable, match="got D = "):
                ops.vq_nearest(x, cb, backend=backend)
            continue
        index, sqdist = ops.vq_nearest(x, cb, backend=backend)
        assert sqdist.dtype == dtype
        assert_nearest(x, cb, index, sqdist)


def test_vq_nearest_ties_and_duplicates(target):
    """Duplicated codewords and points equidistant from several codes: the lowest index wins."""
    backend, device = target
    base = torch.randn(10, 8)
    cb = torch.cat([base, base, base[:3]]).to(device)  # every code appears at least twice
    x = torch.cat([base[[4, 2, 9]], torch.zeros(1, 8)]).to(device)
    index, sqdist = ops.vq_nearest(x, cb, backend=backend)
    assert index[:3].tolist() == [4, 2, 9]
    # Integer-valued codes make exact ties: (1,0..) and (0,1..) are equidistant from (0.5, 0.5, 0..).
    cb2 = torch.eye(8, device=device).repeat(3, 1)
    x2 = torch.zeros(2, 8, device=device)
    x2[0, :2] = 0.5
    x2[1, 5] = 1.0
    index2, _ = ops.vq_nearest(x2, cb2, backend=backend)
    assert index2.tolist() == [0, 5]


def assert_rows_alone_match_block(K, D=37, N=41):
    """The C++ search scans codes for blocks of 4 rows, with kernels of their own for blocks of 1-3
    live rows (a stream codes one row per item per frame): a row's code and distance must not
    depend on which rows share its block, bit for bit, or a stream would code differently from the
    whole signal. Also: duplicated codes go to the lower index, and a NaN row (code 0, as
    torch.argmin gives) changes nothing for the rows beside it."""
    cb = torch.randn(K, D)
    x = torch.randn(N, D)
    # Midpoints of two codes tie but for rounding: there, summing the products in another order
    # than the 4-row kernel does picks the other code some of the time.
    pairs = torch.randint(0, K, (N // 2, 2))
    x[: N // 2] = (cb[pairs[:, 0]] + cb[pairs[:, 1]]) / 2
    x[5] = float("nan")
    cbs = torch.randn(3, K, D) * torch.tensor([1.0, 0.5, 0.25]).view(-1, 1, 1)
    dup = torch.cat([cb, cb])
    index, sqdist = ops.vq_nearest(x, cb, backend="cpp")
    finite = torch.arange(N) != 5
    assert_nearest(x[finite], cb, index[finite], sqdist[finite])
    assert index[5] == 0
    dup_index, _ = ops.vq_nearest(x, dup, backend="cpp")
    assert torch.equal(dup_index, index), "a duplicated code must go to its lower index"
    codes, q = ops.rvq_encode(x, cbs, backend="cpp")
    for n in (1, 2, 3, 5):
        for s in range(0, N, n):
            rows = slice(s, s + n)
            i, d = ops.vq_nearest(x[rows], cb, backend="cpp")
            assert torch.equal(i, index[rows]), f"rows {s}..{s + n - 1} searched {n} at a time"
            torch.testing.assert_close(d, sqdist[rows], rtol=0, atol=0, equal_nan=True)
            assert torch.equal(ops.vq_nearest(x[rows], dup, backend="cpp")[0], index[rows])
            c, qq = ops.rvq_encode(x[rows], cbs, backend="cpp")
            assert torch.equal(c, codes[rows])
            torch.testing.assert_close(qq, q[rows], rtol=0, atol=0, equal_nan=True)


# Tile counts odd and even, with and without padding, at both tile widths (24 codes with AVX2, 48
# with AVX-512); 1024 is the codec's codebook size.
@pytest.mark.parametrize("K", [1, 24, 25, 47, 72, 97, 1024])
def test_cpp_rows_searched_alone_match_a_block(K):
    require_backend("cpp", "cpu")
    assert_rows_alone_match_block(K)


def test_vq_nearest_noncontiguous(target):
    backend, device = target
    x = noncontiguous(torch.randn(37, 9, device=device))
    cb = torch.randn(20, 9, device=device).t().contiguous().t()  # column-major view
    index, sqdist = ops.vq_nearest(x, cb, backend=backend)
    assert_nearest(x, cb, index, sqdist)


def assert_every_stage_nearest(x, cbs, codes):
    """Each stage's code is a true nearest code (tie rule as assert_nearest) of the residual that
    stage searched: x less the earlier stages' codewords, subtracted in order in x's dtype, as the
    search does. (Only stage 0 was checked before: a kernel skipping codes in later stages passed.)"""
    r = x
    for i in range(codes.shape[1]):
        assert_nearest(r, cbs[i], codes[:, i], None)
        r = r - cbs[i][codes[:, i].to(cbs.device)]


def _recon_error(x, q):
    return ((x.double() - q.double()) ** 2).sum().item()


@pytest.mark.parametrize("N,Q,K,D", [(1, 1, 2, 8), (7, 8, 1, 2), (1000, 8, 64, 100), (333, 32, 16, 8),
                                     (129, 3, 1024, 128)])
def test_rvq_encode_decode(target, N, Q, K, D):
    backend, device = target
    if interpreted(backend, device) and N * Q * K * D > SMALL_VQ * 4:
        needs_gpu("too slow for the Triton interpreter")
    for dtype in _dtypes(backend, device):
        x = torch.randn(N, D, dtype=dtype, device=device)
        # Later stages see smaller residuals: scale codebooks down per stage as trained ones are.
        cbs = torch.randn(Q, K, D, dtype=dtype, device=device) * (0.6 ** torch.arange(Q, device=device)).view(-1, 1, 1)
        codes, q = ops.rvq_encode(x, cbs, backend=backend)
        ref_codes, ref_q = ops.rvq_encode_ref(x, cbs)
        assert codes.shape == (N, Q) and codes.dtype == torch.int64 and q.dtype == dtype
        assert ((codes >= 0) & (codes < K)).all()
        assert_every_stage_nearest(x, cbs, codes)
        err, ref_err = _recon_error(x, q), _recon_error(x, ref_q)
        assert err <= ref_err * 1.01 + 1e-9, f"reconstruction error {err} vs reference {ref_err}"
        # quantized is exactly the stage-ordered sum of the chosen codewords, on every backend.
        assert torch.equal(ops.rvq_decode(codes, cbs, backend=backend), q)
        assert torch.equal(ops.rvq_decode_ref(codes, cbs), q)
        if Q > 1:
            codes2, q2 = ops.rvq_encode(x, cbs, n_q=Q - 1, backend=backend)
            assert codes2.shape == (N, Q - 1)
            agree = (codes2 == codes[:, : Q - 1]).all(1)
            assert agree.float().mean() > 0.99, "fewer stages must choose the same leading codes"


@pytest.mark.parametrize("N,Q,K,D", [(1, 1, 2, 8), (7, 8, 1, 2), (50, 3, 40, 20), (20, 2, 30, 100),
                                     (333, 6, 64, 100), (129, 3, 1024, 128)])
def test_rvq_residuals(target, N, Q, K, D):
    """Codes equal rvq_encode's; residuals[:, 0] is x and each next one the previous minus the
    chosen codeword, in x's dtype, bit for bit (the same arithmetic as the search's own residual)."""
    backend, device = target
    if interpreted(backend, device) and N * Q * K * D > SMALL_VQ * 4:
        needs_gpu("too slow for the Triton interpreter")
    for dtype in _dtypes(backend, device):
        x = noncontiguous(torch.randn(N, D, dtype=dtype, device=device))
        cbs = torch.randn(Q, K, D, dtype=dtype, device=device) * (0.6 ** torch.arange(Q, device=device)).view(-1, 1, 1)
        for n_q in sorted({1, Q}):
            codes, res = ops.rvq_residuals(x, cbs, n_q, backend=backend)
            assert codes.shape == (N, n_q) and res.shape == (N, n_q + 1, D) and res.dtype == dtype
            assert torch.equal(codes, ops.rvq_encode(x, cbs, n_q, backend=backend)[0])
            assert_every_stage_nearest(x, cbs, codes)
            assert torch.equal(res[:, 0], x)
            for i in range(n_q):
                assert torch.equal(res[:, i + 1], res[:, i] - cbs[i][codes[:, i]]), f"stage {i}"
            ref_codes, ref_res = ops.rvq_residuals_ref(x, cbs, n_q)
            err, ref_err = res[:, -1].double().pow(2).sum().item(), ref_res[:, -1].double().pow(2).sum().item()
            assert err <= ref_err * 1.01 + 1e-9, f"final residual {err} vs reference {ref_err}"


def test_rvq_encode_noncontiguous(target):
    backend, device = target
    x = noncontiguous(torch.randn(50, 12, device=device))
    cbs = torch.randn(4, 12, 32, device=device).transpose(1, 2)  # [Q, K=32, D=12], non-contiguous
    codes, q = ops.rvq_encode(x, cbs, backend=backend)
    assert_every_stage_nearest(x, cbs, codes)
    assert _recon_error(x, q) <= _recon_error(x, ops.rvq_encode_ref(x, cbs)[1]) * 1.01


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("N,Q,K,D", [(37, 4, 50, 8), (9, 3, 300, 100), (21, 2, 90, 200), (300, 8, 1024, 128)])
def test_16bit_searches_follow_the_reference_stage_by_stage(target, dtype, N, Q, K, D):
    """fp16/bf16 on the backends that take them (Triton, the C++ CUDA kernels): every stage's
    code is a nearest code of the residual that stage saw, rounded to the dtype stage by stage
    as the reference rounds it; quantized is rvq_decode(codes) bit for bit; each stage's stored
    residual is that rounded residual; vq_nearest's distance is the chosen code's."""
    backend, device = target
    if dispatch.refusal("rvq_encode", backend, device, dtype, {"D": D}):  # cpp: fp32 and fp64 only
        with pytest.raises(ops.BackendUnavailable, match="cannot run here"):
            ops.rvq_encode(torch.randn(N, D, device=device).to(dtype), torch.randn(Q, K, D, device=device).to(dtype),
                           backend=backend)
        return
    if interpreted(backend, device) and N * Q * K * D > SMALL_VQ * 4:
        needs_gpu("too slow for the Triton interpreter")
    x = torch.randn(N, D, device=device).to(dtype)
    cbs = (torch.randn(Q, K, D, device=device) * (0.6 ** torch.arange(Q, device=device)).view(-1, 1, 1)).to(dtype)

    def same(a, b, what):
        if interpreted(backend, device) and dtype == torch.bfloat16:
            # Triton's interpreter casts fp32 to bf16 by truncation where a GPU rounds to nearest:
            # within one bf16 step per stage there, bit for bit on a GPU.
            eps = Q * torch.finfo(dtype).eps
            torch.testing.assert_close(a.float(), b.float(), rtol=eps, atol=eps * float(b.float().abs().max()),
                                       msg=what)
        else:
            assert torch.equal(a, b), what

    codes, q = ops.rvq_encode(x, cbs, backend=backend)
    assert codes.shape == (N, Q) and q.dtype == dtype
    assert_every_stage_nearest(x, cbs, codes)
    same(q, ops.rvq_decode_ref(codes, cbs), "quantized vs the sum of its codewords")
    same(ops.rvq_decode(codes, cbs, backend=backend), ops.rvq_decode_ref(codes, cbs), "rvq_decode")
    codes_r, res = ops.rvq_residuals(x, cbs, backend=backend)
    assert torch.equal(codes_r, codes) and res.dtype == dtype
    r = x
    for i in range(Q + 1):
        same(res[:, i], r, f"stage {i}'s residual")
        if i < Q:
            r = r - cbs[i][codes[:, i]]
    index, sqdist = ops.vq_nearest(x, cbs[0], backend=backend)
    assert torch.equal(index, codes[:, 0]) and sqdist.dtype == dtype
    exact = ((x.double() - cbs[0][index].double()) ** 2).sum(1)
    torch.testing.assert_close(sqdist.double(), exact, rtol=4 * torch.finfo(dtype).eps, atol=0)


def test_rvq_decode_exact_and_noncontiguous(target):
    backend, device = target
    cbs = torch.randn(6, 40, 10, device=device)
    codes = torch.randint(0, 40, (77, 6), device=device)
    for c in (codes, codes[:, :3], noncontiguous(codes), codes.int()):
        assert torch.equal(ops.rvq_decode(c, cbs, backend=backend), ops.rvq_decode_ref(c.long(), cbs))


@pytest.mark.parametrize("backend_all", ["torch", "kernel"])
def test_rvq_decode_checks_codes_where_it_costs_no_sync(target, backend_all):
    """Codes outside [0, K): an error where they are checked (CPU codes by default, everywhere
    with check=True); NaN rows, the others exact, where they are not (GPU codes by default: reading
    them back would stall the device at every call), on every backend and with no device assert."""
    backend, device = target
    backend = "torch" if backend_all == "torch" else backend
    cbs = torch.randn(4, 10, 6, device=device)
    codes = torch.randint(0, 10, (9, 4), device=device)
    codes[2, 1], codes[5, 3] = 10, -1
    with pytest.raises(ValueError, match="codes must lie"):
        ops.rvq_decode(codes, cbs, backend=backend, check=True)
    if device == "cpu":
        with pytest.raises(ValueError, match="codes must lie"):
            ops.rvq_decode(codes, cbs, backend=backend)
    out = ops.rvq_decode(codes, cbs, backend=backend, check=False)
    bad = torch.zeros(9, dtype=torch.bool)
    bad[[2, 5]] = True
    assert torch.isnan(out.cpu()[bad]).all()
    good = ~bad.to(device)
    assert torch.equal(out[good], ops.rvq_decode_ref(codes[good], cbs))
    if device == "cuda":  # the default on a GPU: no synchronization at all
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out = ops.rvq_decode(codes, cbs, backend=backend)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isnan(out.cpu()[bad]).all()


def test_unchecked_bad_codes_send_no_gradient(target):
    """A row decoded to NaN for an out-of-range code gives its codewords no gradient, on every
    backend alike, and nothing is indexed out of bounds (codes K and -1 at the edge stages)."""
    backend, device = target
    cbs = torch.randn(3, 5, 2, device=device)
    codes = torch.tensor([[0, 1, 5], [-1, 4, 4], [1, 2, 3]], device=device)
    grads = []
    for be in (backend, "torch"):
        leaf = cbs.clone().requires_grad_(True)
        ops.rvq_decode(codes, leaf, backend=be, check=False).nan_to_num(0.0).sum().backward()
        grads.append(leaf.grad)
    expected = torch.zeros(3, 5, 2, device=device)
    expected[[0, 1, 2], [1, 2, 3]] = 1.0
    for g in grads:
        assert torch.equal(g, expected)


def test_empty_rows(target):
    backend, device = target
    x = torch.randn(0, 8, device=device)
    index, sqdist = ops.vq_nearest(x, torch.randn(5, 8, device=device), backend=backend)
    assert index.shape == (0,) and sqdist.shape == (0,)
    codes, q = ops.rvq_encode(x, torch.randn(3, 5, 8, device=device), backend=backend)
    assert codes.shape == (0, 3) and q.shape == (0, 8)


def test_rvq_decode_grad_matches_reference(target):
    backend, device = target
    cbs = torch.randn(3, 9, 4, device=device)
    codes = torch.randint(0, 9, (31, 3), device=device)
    g = torch.randn(31, 4, device=device)
    grads = []
    for be in (backend, "torch"):
        leaf = cbs.clone().requires_grad_(True)
        ops.rvq_decode(codes, leaf, backend=be).backward(g)
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_search_results_carry_no_gradient(target):
    backend, device = target
    x = torch.randn(5, 4, device=device, requires_grad=True)
    cbs = torch.randn(2, 3, 4, device=device, requires_grad=True)
    index, sqdist = ops.vq_nearest(x, cbs[0], backend=backend)
    codes, q = ops.rvq_encode(x, cbs, backend=backend)
    assert not sqdist.requires_grad and not q.requires_grad and not index.requires_grad


PEAK_RSS = """
import sys, torch
from fastcodec import ops


def status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


torch.set_num_threads(1)
x, cbs = torch.randn(20000, 8), torch.randn(2, 4096, 8)
if sys.argv[1] == "matrix":  # the control: what a search through an N x K matrix does
    search = lambda x: torch.cdist(x, cbs[0]).argmin(1)
else:
    search = lambda x: ops.rvq_encode(x, cbs, backend=sys.argv[1])
search(x[:10])  # load and warm up at a size that allocates nothing big
before = status_kb("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # restart the peak (VmHWM) from the current RSS
    f.write("5")
search(x)
print((status_kb("VmHWM") - before) * 1024)
"""


def _peak_rss_growth(search):
    import os
    import subprocess
    from pathlib import Path

    root = str(Path(ops.__file__).resolve().parent.parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, search], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return int(r.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc/self")
def test_fused_rvq_encode_allocates_no_distance_matrix():
    """N x K = 20000 x 4096 fp32 is 328 MB: a search through that matrix shows in the process's
    peak RSS (the control, so the measurement can fail); the C++ search must stay far below."""
    from conftest import require_backend

    require_backend("cpp", "cpu")
    nk = 20000 * 4096 * 4
    assert _peak_rss_growth("matrix") > 0.9 * nk
    assert _peak_rss_growth("cpp") < 0.1 * nk

"""The Triton search split over codes (ops/triton/vq.py: code_split, the "triton:split" variant the
measured 'auto' may choose when rows are few): the same codes, quantized sums, residuals and
distances as the one-launch search, bit for bit, for any number of splits; ties across splits go
to the lowest code; the variant reaches the kernel only through dispatch's VARIANTS."""
import pytest
import torch

from conftest import interpreted, needs_gpu, require_backend
from fastcodec import ops
from fastcodec.ops import dispatch, search

TRITON_TARGETS = [("triton", "cpu"), ("triton", "cuda")]


@pytest.fixture(params=TRITON_TARGETS, ids=[f"{b}-{d}" for b, d in TRITON_TARGETS])
def device(request):
    require_backend(*request.param)
    return request.param[1]


def _vq():
    from fastcodec.ops.triton import vq

    return vq


def _all_outputs(x, cbs, n_q):
    """(codes, quantized, residuals, vq_nearest's index and distance) on the Triton backend."""
    codes, q = ops.rvq_encode(x, cbs, n_q, backend="triton")
    codes_r, res = ops.rvq_residuals(x, cbs, n_q, backend="triton")
    assert torch.equal(codes, codes_r)
    index, dist = ops.vq_nearest(x, cbs[0], backend="triton")
    return codes, q, res, index, dist


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("N,Q,K,D", [(37, 4, 300, 8), (5, 3, 130, 100), (1, 2, 70, 16), (40, 2, 65, 200),
                                     (75, 8, 1024, 128)])
def test_split_search_equals_the_one_launch_search(device, dtype, N, Q, K, D):
    vq = _vq()
    if interpreted("triton", device) and N * Q * K * D > 1_500_000:
        needs_gpu("too slow for the Triton interpreter")
    x = torch.randn(N, D, device=device).to(dtype)
    nan_row = not interpreted("triton", device)  # (the interpreter's argmin raises on an all-NaN tile)
    if nan_row:
        x[N // 2] = float("nan")  # a NaN row takes code 0 in both
    cbs = (torch.randn(Q, K, D, device=device) * (0.6 ** torch.arange(Q, device=device)).view(-1, 1, 1)).to(dtype)
    one = _all_outputs(x, cbs, Q)
    for splits in (2, 3, None):  # None: as many as the launcher picks for this device
        spy = []
        real = vq._encode_split
        vq._encode_split = lambda *a, **k: spy.append(1) or real(*a, **k, splits=splits)
        try:
            with vq.code_split():
                split = _all_outputs(x, cbs, Q)
        finally:
            vq._encode_split = real
        assert len(spy) == 3  # rvq_encode, rvq_residuals, vq_nearest all took the split search
        for name, a, b in zip(("codes", "quantized", "residuals", "index", "distance"), one, split):
            same = torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                         and torch.equal(a.nan_to_num(), b.nan_to_num()))  # (the NaN row)
            assert same, f"{name} with {splits} splits"
    if nan_row:
        assert (one[0][N // 2] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_ties_across_splits_go_to_the_lowest_code(device, dtype):
    vq = _vq()
    K, D = 256, 16
    cbs = torch.randn(2, K, D, device=device).to(dtype)
    x = torch.randn(6, D, device=device).to(dtype)
    # Row i's nearest code appears twice, at 70 + i and 200 + i (in different splits), and row 0's
    # at 130 too: the lowest copy must win. Rows 4 and 5 have theirs in the last split only.
    for i in range(4):
        cbs[0, 70 + i] = cbs[0, 200 + i] = x[i]
    cbs[0, 130] = x[0]
    cbs[0, 250], cbs[0, 251] = x[4], x[5]
    for splits in (2, 4):
        codes, _, _, _ = vq._encode_split(x, cbs, 2, False, False, False, splits=splits)
        assert codes[:, 0].tolist() == [70, 71, 72, 73, 250, 251], splits
        one, _, _, _ = vq._encode(x, cbs, 2, False, False)
        assert torch.equal(codes, one)


def test_the_split_variant_is_a_candidate_for_few_rows_only():
    require_backend("triton", "cpu") if not torch.cuda.is_available() else require_backend("triton", "cuda")
    vq = _vq()
    few, many = {"D": 8, "N": 75}, {"D": 8, "N": vq.SPLIT_MAX_ROWS + 1}
    for op in ("vq_nearest", "rvq_encode", "rvq_residuals"):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            assert dispatch.variants(op, ["triton", "torch"], dtype, few) == ["triton:split"]
            assert dispatch.variants(op, ["triton", "torch"], dtype, many) == []
        assert dispatch.variants(op, ["torch"], torch.float32, few) == []
    assert dispatch.variants("rvq_decode", ["triton"], torch.float32, few) == []


def test_a_chosen_split_variant_runs_the_split_search(device, monkeypatch):
    """search._searched is what a call runs once dispatch.choose (or the tuner timing candidates)
    returned "triton:split"; the fast mode's fp32 split search is exact mode's."""
    vq = _vq()
    calls = []
    real = vq._encode_split
    monkeypatch.setattr(vq, "_encode_split", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    x, cbs = torch.randn(9, 8, device=device), torch.randn(3, 100, 8, device=device)
    exact = ops.rvq_encode(x, cbs, backend="triton")
    for mode in ("exact", "fast"):
        out = search._searched("rvq_encode", "triton:split", mode, x, cbs, 3)
        assert torch.equal(out[0], exact[0]) and torch.equal(out[1], exact[1])
    assert calls == [3, 3]
    index, _ = search._searched("vq_nearest", "triton:split", "exact", x, cbs[0])
    assert torch.equal(index, exact[0][:, 0]) and calls == [3, 3, 1]
    search._searched("rvq_encode", "triton", "exact", x, cbs, 3)
    assert calls == [3, 3, 1]  # the bare name: the one-launch search

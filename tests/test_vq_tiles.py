"""The tensor-core RVQ search's block loop (csrc/cuda/vq_tiles.h: row blocks, code tiles taken
round-robin by the warps (and by the blocks of a cluster, for few rows), zero padding to the MMA
depth, the running min and the warps' and blocks' merges under torch.argmin's tie rule, the
residual update in the input type, the shared-memory layout), run on the CPU by the tile
emulator. What a GPU alone runs is the fragments' loads, the MMAs, the shared-memory staging and
the cluster's barriers and remote reads (tests/test_vq.py's 16-bit cases on the cuda backend)."""
import pytest
import torch

from conftest import require_backend
from fastcodec import ops

TIE_RTOL = 1e-5  # as tests/test_vq.py: a chosen code may be farther than the nearest by this much only
DTYPES = [torch.float16, torch.bfloat16]
# (N, K, D, n_q): one row and code; one code tile per warp at most; rows past one 16-row block and
# codes past the 4 warps' first round of 16-code tiles; K not a multiple of 16; D odd and not a
# multiple of 16; the codec's code_dim 128 with K = 1024.
CASES = [(1, 1, 2, 1), (7, 2, 8, 3), (33, 300, 32, 6), (17, 77, 13, 4), (40, 1024, 128, 2), (3, 65, 100, 1)]


def _emulate(x, cbs, n_q):
    require_backend("cpp", "cpu")
    return torch.ops.fastcodec_dev.rvq_tiles_emulate(x, cbs, n_q)


def _dist64(r, cb):
    r, cb = r.double(), cb.double()
    return ((r[:, None, :] - cb[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_search_tiles_find_each_stages_nearest_code(case, dtype):
    """Each stage's code is a nearest code (fp64 distances of the 16-bit values, ties within
    TIE_RTOL) of the residual it searched; each residual is the last one minus the chosen code in
    the input type, bit for bit; quantized is the chosen codes summed in stage order, as the
    reference's; sqdist is the last stage's distance."""
    N, K, D, n_q = case
    g = torch.Generator().manual_seed(N * 1000 + K)
    x = torch.randn(N, D, generator=g).to(dtype)
    cbs = (torch.randn(n_q, K, D, generator=g) / (1 + torch.arange(n_q))[:, None, None] ** 0.5).to(dtype)
    codes, quantized, sqdist, residuals = _emulate(x, cbs, n_q)
    assert codes.shape == (N, n_q) and ((codes >= 0) & (codes < K)).all()
    assert torch.equal(residuals[:, 0], x)
    q = torch.zeros_like(x)
    for i in range(n_q):
        r, chosen = residuals[:, i], cbs[i][codes[:, i]]
        d = _dist64(r, cbs[i])
        picked = d.gather(1, codes[:, i : i + 1]).squeeze(1)
        assert (picked <= d.min(1).values * (1 + TIE_RTOL) + 1e-12).all(), f"stage {i}: a code not the nearest"
        assert torch.equal(residuals[:, i + 1], r - chosen), f"stage {i}: residual update"
        q = q + chosen
    assert torch.equal(quantized, q)
    last = _dist64(residuals[:, n_q - 1], cbs[n_q - 1]).gather(1, codes[:, -1:]).squeeze(1)
    torch.testing.assert_close(sqdist.double(), last, rtol=4 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ties_across_warps_go_to_the_lowest_index(dtype):
    """A code whose first copy sits in a later warp's tile than its other copies (warp 1's tile
    holds code 20; warps 0 and 2 hold copies 40, 64 and 129) resolves to that first copy, as
    torch.argmin: the merge ranks by index on equal scores, not by warp. A NaN row gets code 0 and
    leaves its neighbours alone."""
    K, D = 130, 24
    cbs = torch.randn(1, K, D).to(dtype)
    for k in (40, 64, 129):  # tiles 2, 4 and 8: warps 2, 0 and 0
        cbs[0, k] = cbs[0, 20]
    x = torch.stack([cbs[0, 20], cbs[0, 9], torch.full((D,), float("nan"), dtype=dtype)])
    codes, _, sqdist, _ = _emulate(x, cbs, 1)
    assert codes[:, 0].tolist() == [20, 9, 0]
    assert sqdist[0] == 0 and sqdist[1] == 0 and torch.isnan(sqdist[2])


def test_the_shared_memory_layout_fits_and_aligns():
    """For every D the kernel takes: regions in order, 128-byte aligned (so each fragment load,
    at a row's start plus a multiple of 16 elements, is 32-byte aligned), none overlapping the
    next, all within the 48 KiB a launch gets without opting in; 16-bit rows a multiple of 8
    elements (WMMA's ldm)."""
    require_backend("cpp", "cpu")
    for D in range(1, 129):
        bytes_, *offsets = torch.ops.fastcodec_dev.rvq_tiles_smem(D)
        Dp = -(-D // 16) * 16
        ld = Dp + 8
        sizes = [16 * Dp * 4, 16 * ld * 2, 4 * 16 * ld * 2, 4 * 16 * 20 * 4, 4 * 16 * 4, 4 * 16 * 8, 16 * 8,
                 2 * 16 * 4, 2 * 16 * 8]
        assert len(offsets) == len(sizes)
        assert offsets[0] == 0 and all(o % 128 == 0 for o in offsets), (D, offsets)
        for o, size, nxt in zip(offsets, sizes, offsets[1:] + [bytes_]):
            assert o + size <= nxt, (D, offsets)
        assert bytes_ <= 48 * 1024 and ld % 8 == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cluster", [2, 3, 8])
def test_clusters_of_blocks_give_the_one_block_search_bit_for_bit(cluster, dtype):
    """With few rows, `cluster` blocks share a row block, their warps taking the code tiles in turn
    and the blocks' bests merged under the same tie rule: every output equals the one-block search's
    (the scores of a code do not depend on which block computed them), including where a cluster
    has more warps than tiles."""
    g = torch.Generator().manual_seed(cluster)
    for N, K, D, n_q in CASES:
        x = torch.randn(N, D, generator=g).to(dtype)
        cbs = torch.randn(n_q, K, D, generator=g).to(dtype)
        one = _emulate(x, cbs, n_q)
        many = torch.ops.fastcodec_dev.rvq_tiles_emulate(x, cbs, n_q, cluster)
        for name, a, b in zip(("codes", "quantized", "sqdist", "residuals"), one, many):
            assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                         and torch.equal(a.nan_to_num(), b.nan_to_num())), (name, N, K, D, n_q)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ties_across_the_blocks_of_a_cluster_go_to_the_lowest_index(dtype):
    """With 2 blocks: code 20 (tile 1: block 0, warp 1) has copies at 70 (tile 4: block 1, warp 0)
    and 129 (tile 8: block 0, warp 0); code 90 (tile 5: block 1, warp 1) has copies at 100 (tile 6:
    block 1) and 128 (tile 8: block 0): the first copy wins whichever block holds it. A NaN row
    still gets code 0."""
    K, D = 130, 24
    cbs = torch.randn(1, K, D).to(dtype)
    cbs[0, 70] = cbs[0, 129] = cbs[0, 20]
    cbs[0, 100] = cbs[0, 128] = cbs[0, 90]
    x = torch.stack([cbs[0, 20], cbs[0, 90], torch.full((D,), float("nan"), dtype=dtype)])
    for cluster in (2, 3):
        codes, _, sqdist, _ = torch.ops.fastcodec_dev.rvq_tiles_emulate(x, cbs, 1, cluster)
        assert codes[:, 0].tolist() == [20, 90, 0], cluster
        assert sqdist[0] == 0 and sqdist[1] == 0 and torch.isnan(sqdist[2])


def test_the_cluster_size_fills_the_device_while_each_warp_has_a_tile():
    """Blocks per row block for an H100's 132 SMs: one second of 24 kHz audio (75 rows, 5 row
    blocks) gets the portable maximum of 8; rows that fill the SMs, or codes too few to give the
    extra blocks' warps a tile (K = 64: 4 tiles, one block's warps), get 1."""
    require_backend("cpp", "cpu")
    size = torch.ops.fastcodec_dev.rvq_tiles_cluster
    assert size(75, 1024, 132) == 8
    assert size(16 * 40, 1024, 132) == 3  # 40 row blocks: 132 // 40
    assert size(16 * 132, 1024, 132) == 1 and size(100_000, 1024, 132) == 1
    assert size(75, 64, 132) == 1 and size(75, 128, 132) == 2  # 8 tiles: two blocks of 4 warps
    with pytest.raises(RuntimeError, match="cluster"):
        _emulate_cluster = torch.ops.fastcodec_dev.rvq_tiles_emulate
        _emulate_cluster(torch.randn(2, 4).half(), torch.randn(1, 3, 4).half(), 1, 9)


def test_the_emulator_checks_its_arguments():
    require_backend("cpp", "cpu")
    with pytest.raises(RuntimeError, match="fp16 or bf16"):
        _emulate(torch.randn(2, 4), torch.randn(1, 3, 4), 1)
    with pytest.raises(RuntimeError, match="D up to 128"):
        _emulate(torch.randn(2, 130).half(), torch.randn(1, 3, 130).half(), 1)
    with pytest.raises(RuntimeError, match="codebook dim"):
        _emulate(torch.randn(2, 4).half(), torch.randn(1, 3, 5).half(), 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_cuda_search_takes_the_tile_cases(dtype):
    """The same cases through the C++ CUDA RVQ on a GPU, which runs fp16/bf16 with D <= 128 on
    tensor cores: each stage's code is a nearest one of the residual it searched and each residual
    follows the last bit for bit, as the emulator's are checked above (the MMAs sum in another
    order, so codes may differ from the emulator's where scores tie within rounding)."""
    require_backend("cuda", "cuda")
    for N, K, D, n_q in CASES:
        x = torch.randn(N, D).to(dtype)
        cbs = torch.randn(n_q, K, D).to(dtype)
        codes, residuals = ops.rvq_residuals(x.cuda(), cbs.cuda(), n_q, backend="cuda")
        codes, residuals = codes.cpu(), residuals.cpu()
        assert torch.equal(residuals[:, 0], x)
        for i in range(n_q):
            d = _dist64(residuals[:, i], cbs[i])
            picked = d.gather(1, codes[:, i : i + 1]).squeeze(1)
            assert (picked <= d.min(1).values * (1 + TIE_RTOL) + 1e-12).all(), (N, K, D, i)
            assert torch.equal(residuals[:, i + 1], residuals[:, i] - cbs[i][codes[:, i]])

"""Quantizer training support: straight-through gradients, commitment loss, EMA codebook
updates equal to a plain-PyTorch EMA, k-means init, dead-code replacement, and identical
codebooks on every rank under torch.distributed."""
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fastcodec
from fastcodec import ops
from fastcodec.nn import codebooks as vt


def test_straight_through_passes_gradient_to_x_unchanged():
    x = torch.randn(9, 4, requires_grad=True)
    q = torch.randn(9, 4)
    y = vt.straight_through(x, q)
    torch.testing.assert_close(y.detach(), q, rtol=0, atol=1e-6)  # x + (q - x): q up to one rounding
    g = torch.randn(9, 4)
    y.backward(g)
    assert torch.equal(x.grad, g)


def test_commitment_loss_is_fp32_and_only_moves_x():
    x = torch.randn(9, 4, dtype=torch.bfloat16, requires_grad=True)
    q = torch.randn(9, 4, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = vt.commitment_loss(x, q)
    assert loss.dtype == torch.float32
    loss.backward()
    torch.testing.assert_close(x.grad.float(), 2 * (x.float() - q.float()).detach() / x.numel(), rtol=1e-2, atol=1e-3)
    assert q.grad is None


def test_ema_stats_and_update_equal_a_plain_pytorch_ema():
    K, D = 7, 3
    codebook = torch.randn(K, D)
    ema_counts, ema_sums = torch.rand(K) + 0.5, torch.randn(K, D)
    x = torch.randn(50, D)
    index, _ = ops.vq_nearest(x, codebook)
    # Plain PyTorch, one code at a time.
    counts = torch.stack([(index == k).sum().float() for k in range(K)])
    sums = torch.stack([x[index == k].sum(0) for k in range(K)])
    c2 = 0.9 * ema_counts + 0.1 * counts
    s2 = 0.9 * ema_sums + 0.1 * sums
    n = (c2 + 1e-5) / (c2.sum() + K * 1e-5) * c2.sum()
    expected = s2 / n.unsqueeze(1)
    got_counts, got_sums = vt.ema_stats(x, index, K)
    torch.testing.assert_close(got_counts, counts)
    torch.testing.assert_close(got_sums, sums)
    vt.ema_update(codebook, ema_counts, ema_sums, x, index, decay=0.9)
    torch.testing.assert_close(ema_counts, c2)
    torch.testing.assert_close(ema_sums, s2)
    torch.testing.assert_close(codebook, expected)


def test_kmeans_init_beats_random_rows_and_is_reproducible():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(8, 4) * 5
    x = centers[torch.randint(0, 8, (2000,), generator=g)] + 0.1 * torch.randn(2000, 4, generator=g)
    cb = vt.kmeans_init(x, 8, iters=15, generator=torch.Generator().manual_seed(1))
    cb_again = vt.kmeans_init(x, 8, iters=15, generator=torch.Generator().manual_seed(1))
    assert torch.equal(cb, cb_again)
    rand_rows = x[torch.randint(0, 2000, (8,), generator=torch.Generator().manual_seed(1))]
    err = lambda c: ops.vq_nearest(x, c)[1].mean().item()  # noqa: E731
    assert err(cb) < err(rand_rows)


def test_dead_codes_are_reseeded_from_the_batch():
    codebook = torch.randn(6, 3)
    ema_counts = torch.tensor([5.0, 0.1, 3.0, 0.0, 2.0, 0.5])
    ema_sums = torch.randn(6, 3)
    alive_before = codebook[[0, 2, 4]].clone()
    x = torch.randn(20, 3)
    n = vt.replace_dead_codes(codebook, ema_counts, ema_sums, x, threshold=1.0,
                              generator=torch.Generator().manual_seed(0))
    assert n == 3
    assert torch.equal(codebook[[0, 2, 4]], alive_before)
    for k in (1, 3, 5):
        assert any(torch.equal(codebook[k], row) for row in x)
        assert ema_counts[k] == 1.0 and torch.equal(ema_sums[k], codebook[k])


DIST = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from fastcodec.nn import codebooks as vt
    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(100 + rank)                    # different data on each rank
    x = torch.randn(64, 4)
    cb = vt.kmeans_init(x, 5, generator=torch.Generator().manual_seed(rank))  # rank 0's init wins
    counts, sums = torch.zeros(5), torch.zeros(5, 4)
    index = torch.cdist(x, cb).argmin(1)
    vt.ema_update(cb, counts, sums, x, index, decay=0.5)
    vt.replace_dead_codes(cb, counts, sums, x, threshold=100.0, generator=torch.Generator().manual_seed(rank))
    torch.save({"cb": cb, "counts": counts, "sums": sums, "x": x, "index": index}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_ranks_keep_identical_codebooks(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not built")
    script = tmp_path / "dist.py"
    script.write_text(DIST)
    root = str(Path(fastcodec.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(script), str(r), port, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert not torch.equal(r0["x"], r1["x"])
    for key in ("cb", "counts", "sums"):
        assert torch.equal(r0[key], r1[key]), key

"""How many codes fast mode re-checks per row, and how often a row's list overflows.

Fast mode (fastcodec/ops/triton/vq.py) keeps, per row and stage, the codes whose TF32 distance
minus its error bound lies below the best TF32 distance plus its bound; a row with more than
FAST_LIST such codes is searched again exactly. Both counts decide what fast mode costs on a GPU,
and both are properties of the data and the bound, not of the hardware, so this script measures
them on the CPU: TF32 products emulated by truncating the inputs to 10 mantissa bits (the worse
of the roundings a GPU may use), the bound from fast_error_terms.

    python benchmarks/rvq_fast_candidates.py [--n 20000]

Data: Gaussian rows and codes; rows from a correlated Gaussian with codes sampled from the rows
(an initialisation by samples); and stages 2 and 3 of an RVQ whose codebooks are a few k-means
iterations on the previous stage's residuals (what training produces, dead codes included).
"""
import argparse

import torch

from fastcodec.ops.triton.vq import FAST_LIST, fast_error_terms


def _tf32(t):
    return (t.view(torch.int32) & -8192).view(torch.float32)


def candidates(x, cb, m=FAST_LIST):
    """Per row of x [N, D] against codes cb [K, D]: (how many codes are candidates, whether the
    kernel's list of m would send the row to the exact fallback)."""
    a, b = fast_error_terms(x.shape[1])
    c_sq = cb.pow(2).sum(1)
    counts, overflow = [], []
    for s in range(0, x.shape[0], 4096):
        r = x[s:s + 4096]
        approx = c_sq[None] - 2.0 * (_tf32(r) @ _tf32(cb).T)
        err = a * r.norm(dim=1)[:, None] * c_sq.sqrt()[None] + b * c_sq[None]
        lower = approx - err
        upper = (approx + err).min(1).values
        near = lower <= upper[:, None]
        counts.append(near.sum(1))
        # The list: the m candidates of lowest bound; the fallback runs when a code off it could
        # be nearer than the best on it (see rvq_encode_kernel).
        bound, idx = torch.where(near, lower, torch.inf).topk(min(m, cb.shape[0]), dim=1, largest=False)
        exact = (r[:, None, :] - cb[idx]).pow(2).sum(2)
        best = torch.where(bound <= upper[:, None], exact, torch.inf).min(1).values
        overflow.append((near.sum(1) > m) & (bound[:, -1] + r.pow(2).sum(1) < best))
    return torch.cat(counts).float(), torch.cat(overflow)


def kmeans(x, k, iters=10):
    c = x[torch.randperm(x.shape[0])[:k]].clone()
    for _ in range(iters):
        a = torch.cdist(x, c).argmin(1)
        n = torch.bincount(a, minlength=k).float()[:, None]
        c = torch.zeros_like(c).index_add_(0, a, x) / n.clamp(min=1)  # a dead code becomes 0
    return c


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--k", type=int, default=1024)
    p.add_argument("--d", type=int, default=128)
    args = p.parse_args()
    torch.manual_seed(0)
    N, K, D = args.n, args.k, args.d
    cases = [("gaussian", torch.randn(N, D), torch.randn(K, D))]
    x = torch.randn(N, D) @ torch.randn(D, D) * 0.1
    cb1 = x[torch.randperm(N)[:K]] + 0.01 * torch.randn(K, D)
    cases.append(("codes sampled from the rows", x, cb1))
    r = x - cb1[torch.cdist(x, cb1).argmin(1)]
    cb2 = kmeans(r, K)
    cases.append(("RVQ stage 2, k-means codebook", r, cb2))
    r2 = r - cb2[torch.cdist(r, cb2).argmin(1)]
    cases.append(("RVQ stage 3, k-means codebook", r2, kmeans(r2, K)))
    block = 16  # rows per program at D = 128 (fast_config): one overflowing row sends all to the fallback
    print(f"N={N} K={K} D={D}, list of {FAST_LIST} per row")
    print("| data | mean candidates | p99 | rows over the list | rows sent to the fallback | blocks of 32 sent |")
    print("|---|---|---|---|---|---|")
    for name, xs, cb in cases:
        n, over = candidates(xs, cb)
        blocks = over[: N // block * block].view(-1, block).any(1).float().mean()
        print(f"| {name} | {n.mean():.2f} | {n.quantile(0.99):.0f} | {(n > FAST_LIST).float().mean():.2%} "
              f"| {over.float().mean():.2%} | {blocks:.1%} |")

if __name__ == "__main__":
    main()

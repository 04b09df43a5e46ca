"""BASE's logit form against the paper's (B, C, d) formulation, and against one top-2 pass.

    python benchmarks/base_vs_reference.py
    python benchmarks/base_vs_reference.py --device cuda     # on a GPU

1. On one pool (N = 10,000, C = 1,000, d = 512, b = 1,000: the paper's code takes ~40 s there), time
   the (B, C, d) distance computation of the published code plus its per-class sort, and
   our BASE on the same logits and head; check both select the same points.
2. On the full pool (N = 1,280,000, C = 1,000), time BASE, MASE and margin against the floor
   of any logit-based selection: one ``topk(2)`` pass over the logits.
"""

from __future__ import annotations

import argparse
import time

import torch
from select_one import synchronize
from synthetic_pool import load_pool

from al_lightning.quotas import even_shares
from al_lightning.strategies import PoolOutputs, build


def paper_base(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, budget: int, batch: int = 100) -> list[int]:
    """The published formulation: per batch, a (B, C, d) tensor of w_p − w_c, then sorts per class."""
    n, num_classes = features.shape[0], weight.shape[0]
    distances = torch.empty(n, num_classes, device=features.device)
    for start in range(0, n, batch):
        h = features[start : start + batch]
        z = h @ weight.T + bias
        p = z.argmax(1)
        normals = weight[p][:, None, :] - weight[None, :, :]  # (B, C, d)
        gaps = ((normals * h[:, None, :]).sum(2) + (bias[p][:, None] - bias[None, :])).abs()
        d = gaps / normals.norm(dim=2)
        rows = torch.arange(h.shape[0], device=h.device)
        d[rows, p] = torch.inf
        d[rows, p] = d.min(1).values
        distances[start : start + batch] = d
    taken, picked = set(), []
    for c, quota in enumerate(even_shares(budget, num_classes)):
        for i in torch.argsort(distances[:, c], stable=True).tolist():
            if quota == 0:
                break
            if i not in taken:
                taken.add(i)
                picked.append(i)
                quota -= 1
    return picked


def timed(fn, device: torch.device):
    """``fn()`` and its wall-clock seconds, the work queued on ``device`` included."""
    synchronize(device)
    start = time.perf_counter()
    value = fn()
    synchronize(device)
    return value, time.perf_counter() - start


def on(device: torch.device, pool: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pool's tensors on ``device``."""
    return {name: tensor.to(device) for name, tensor in pool.items()}


def against_paper(n: int, budget: int, device: torch.device) -> None:
    pool = on(device, load_pool(n, 1000, 512, {"features", "logits"}))
    outputs = PoolOutputs(index=torch.arange(n, device=device), logits=pool["logits"], weight=pool["weight"], bias=pool["bias"])
    reference, paper_s = timed(lambda: paper_base(pool["features"], pool["weight"], pool["bias"], budget), device)
    build("base").select(outputs, budget)  # warm-up: threads and allocator, as in a long-running job
    ours, ours_s = timed(lambda: build("base").select(outputs, budget), device)
    agree = len(set(reference) & set(ours.tolist())) / budget
    print(f"N={n:,} C=1000 d=512 b={budget:,}: paper (B,C,d) {paper_s:.2f}s, logit form {ours_s:.3f}s, "
          f"{paper_s / ours_s:.0f}x faster; same picks {agree:.1%} (float rounding of the two formulas)")


def against_top2(n: int, budget: int, device: torch.device) -> None:
    labeled = round(n / 25.6)  # the cached pool of select_strategies.py
    pool = on(device, load_pool(n + labeled, 1000, 2048, {"logits"}))
    logits = pool["logits"][labeled:]
    full = PoolOutputs(index=torch.arange(n, device=device), logits=logits, weight=pool["weight"], bias=pool["bias"])
    logits[:10_000].topk(2, dim=1)  # warm-up
    _, floor_s = timed(lambda: logits.topk(2, dim=1), device)
    print(f"N={n:,} C=1000: one top-2 pass over the logits {floor_s:.2f}s")
    for name in ("base", "mase", "margin"):
        build(name).select(PoolOutputs(index=full.index[:20_000], logits=logits[:20_000], weight=full.weight), budget // 100)
        _, seconds = timed(lambda: build(name).select(full, budget), device)
        print(f"  {name}: {seconds:.2f}s = {seconds / floor_s:.1f}x the top-2 pass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-n", type=int, default=10_000)
    parser.add_argument("--full-n", type=int, default=1_280_000)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--small-budget", type=int, default=1_000, help="budget on the small pool (10%%)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = torch.device(args.device)
    against_paper(args.small_n, args.small_budget, device)
    against_top2(args.full_n, args.budget, device)


if __name__ == "__main__":
    main()

"""TypiClust here against scikit-activeml's ``skactiveml.pool.TypiClust``, side by side, on the same synthetic features.

    pip install scikit-activeml          # not a dependency of al_lightning: only this script needs it
    python benchmarks/typiclust_vs_skactiveml.py                  # N = 5,000 and 20,000, d = 128, b = 100
    python benchmarks/typiclust_vs_skactiveml.py --sizes 2000 --seeds 1

Both select b points from zero labels (the cold start TypiClust is for) on the class-clustered
embeddings of ``benchmarks/synthetic_pool.py`` (C = 100 classes). The two are not the same
algorithm in every detail, so the comparison is statistical, over seeds:

* clusters: both cut the pool into K = M + b = b clusters (ours caps K at 500; scikit-activeml
  runs sklearn ``KMeans``, ours exact Lloyd's on the fixed-point grid);
* typicality of the picks, measured one way for all: 1 / (mean squared distance to the 20
  nearest neighbours in the whole pool), exact (the neighbour engine); higher is denser;
* classes covered by the b picks (of 100), and the same figures for b random points;
* select time, one process, this machine's threads.

scikit-activeml runs with ``k=20`` (its default is 5) to match the authors' ``K_NN``; it takes
Euclidean (not squared) distances, visits only clusters without labels (no minimum size) and
breaks ties at random. Ours runs with ``normalize=False``, so both see the same geometry.
Results: printed as a Markdown table, and written to benchmarks/results/typiclust_vs_skactiveml_<machine>.md
with ``--out``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from al_lightning.strategies import PoolOutputs, build  # noqa: E402
from al_lightning.strategies.neighbours import nearest_neighbours, on_one_grid  # noqa: E402
from benchmarks.synthetic_pool import load_pool  # noqa: E402


def global_typicality(features: torch.Tensor, k: int = 20) -> torch.Tensor:
    """(N,) 1 / (mean squared distance to the k nearest other points of the pool), exact."""
    (grid,) = on_one_grid(features)
    sq, _ = nearest_neighbours(grid, k)
    return 1.0 / grid.from_grid_sq(sq).mean(dim=1)


def ours(features: torch.Tensor, budget: int, seed: int) -> np.ndarray:
    outputs = PoolOutputs(index=torch.arange(features.shape[0]), features=features)
    return build("typiclust", seed=seed, normalize=False).select(outputs, budget).numpy()


def theirs(features: torch.Tensor, budget: int, seed: int) -> np.ndarray:
    from skactiveml.pool import TypiClust

    y = np.full(features.shape[0], np.nan)
    return np.asarray(TypiClust(random_state=seed, k=20).query(features.numpy(), y, batch_size=budget))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    lines = [
        f"TypiClust, cold start (0 labels), b = {args.budget}, d = {args.dim}, C = {args.classes}, "
        f"{args.seeds} seeds; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "",
        "| N | method | clusters | mean typicality of picks (± sd over seeds) | classes covered | select time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for n in args.sizes:
        pool = load_pool(n, args.classes, args.dim, {"features", "targets"})
        features, targets = pool["features"], pool["targets"]
        typicality = global_typicality(features)
        rows: dict[str, list[tuple[float, int, float]]] = {"al_lightning typiclust": [], "skactiveml TypiClust": [], "random": []}
        for seed in range(args.seeds):
            for name, pick in (("al_lightning typiclust", ours), ("skactiveml TypiClust", theirs)):
                start = time.perf_counter()
                chosen = pick(features, args.budget, seed)
                seconds = time.perf_counter() - start
                assert len(set(chosen.tolist())) == args.budget
                rows[name].append((float(typicality[chosen].mean()), len(set(targets[chosen].tolist())), seconds))
            chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: args.budget].numpy()
            rows["random"].append((float(typicality[chosen].mean()), len(set(targets[chosen].tolist())), 0.0))
        for name, values in rows.items():
            typ = [v[0] for v in values]
            spread = statistics.stdev(typ) if len(typ) > 1 else 0.0
            clusters = "—" if name == "random" else str(min(args.budget, 500))
            seconds = "—" if name == "random" else f"{statistics.mean(v[2] for v in values):.2f}"
            lines.append(
                f"| {n:,} | {name} | {clusters} | {statistics.mean(typ):.4f} ± {spread:.4f} | "
                f"{statistics.mean(v[1] for v in values):.1f} | {seconds} |"
            )
        lines.append(f"| {n:,} | (all points) | | {float(typicality.mean()):.4f} | | |")
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

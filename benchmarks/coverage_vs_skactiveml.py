"""probcover and maxherding against scikit-activeml 1.0.1's ProbCover and MaxHerding: same picks? how much faster?

    python benchmarks/coverage_vs_skactiveml.py                    # N = 5,000 and 20,000 (~15 min on 2 cores)
    python benchmarks/coverage_vs_skactiveml.py --sizes 2000       # a quick look

Features: benchmarks/synthetic_pool.py's class-clustered embeddings (C = 10, d = 128), L2-normalised
here in float64, so both libraries get the same unit vectors (scikit-activeml's ProbCover does
not normalise; its MaxHerding normalises again, which changes nothing but rounding). No labeled
points, b = 100. scikit-activeml breaks equal utilities at random (``rand_argmax``); for the
one-for-one comparison its modules' ``rand_argmax`` is replaced by an argmax that takes the
lowest index among equal maxima, as al_lightning does. ProbCover is also run with ``random_state=0`` (its own random tie-breaking) and the
overlap reported. ProbCover's δ is the purity-chosen one of al_lightning (rounded to 3
decimals), given to both as a fixed ``delta``/``deltas=[delta]``. MaxHerding's γ is fixed.

maxherding is also run truncated (``max_dense=0``: each point keeps the kernel of its
``neighbours`` = 100 nearest): overlap with the exact picks and the coverage objective its
picks reach, f(S) = Σ_x max_{s∈S} k(x, s), relative to the exact picks'.
Results: benchmarks/results/coverage_vs_skactiveml_<machine>.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from synthetic_pool import load_pool  # noqa: E402

from al_lightning.strategies import PoolOutputs, build  # noqa: E402


def lowest_first_argmax(a, random_state=None, **argmax_kwargs):
    """scikit-activeml's ``rand_argmax`` with ties to the lowest index (NaN skipped), as al_lightning breaks them."""
    return np.atleast_1d(np.nanargmax(np.asarray(a, dtype=float), **argmax_kwargs))


def lowest_first(module_name: str):
    """A context in which scikit-activeml's module ``module_name`` breaks equal utilities by lowest index."""
    import contextlib
    import importlib

    module = importlib.import_module(module_name)

    @contextlib.contextmanager
    def patched():
        original = module.rand_argmax
        module.rand_argmax = lowest_first_argmax
        try:
            yield
        finally:
            module.rand_argmax = original

    return patched()


def coverage(features: np.ndarray, picks: list[int], gamma: float) -> float:
    """f(S) = Σ_x max_{s∈S} exp(−γ‖x − s‖²), in float64 (unit rows)."""
    x = torch.from_numpy(features)
    s = x[picks]
    sq = (x * x).sum(1)[:, None] + (s * s).sum(1)[None, :] - 2.0 * x @ s.T
    return float(torch.exp(-gamma * sq.clamp(min=0)).amax(1).sum())


def picks_until_covered(features: np.ndarray, picks: list[int], delta: float) -> int:
    """How many of ``picks`` come before every point is within ``delta`` of one (ProbCover's picks are random after)."""
    x = torch.from_numpy(features)
    covered = torch.zeros(len(x), dtype=torch.bool)
    for count, p in enumerate(picks):
        if bool(covered.all()):
            return count
        covered |= (x - x[p]).norm(dim=1) <= delta
    return len(picks)


def timed(call):
    start = time.perf_counter()
    out = call()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--gamma", type=float, default=5.0)
    parser.add_argument("--neighbours", type=int, default=100)
    parser.add_argument("--machine", default="cpu2")
    args = parser.parse_args()
    from skactiveml.pool import MaxHerding as SkMaxHerding
    from skactiveml.pool import ProbCover as SkProbCover

    lines = [
        f"# coverage strategies vs scikit-activeml 1.0.1 ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__})",
        "",
        f"C = 10 clustered synthetic features, d = 128, L2-normalised, b = {args.budget}, no labeled points; "
        f"maxherding γ = {args.gamma}, truncated to k = {args.neighbours} neighbours.",
        "",
        "| N | strategy | al_lightning s | scikit-activeml s | speedup | same picks (lowest-index ties) "
        "| overlap (skactiveml random ties) | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in args.sizes:
        pool = load_pool(n, 10, 128, {"features"}, seed=0)
        raw = pool["features"].double()
        features = (raw / raw.norm(dim=1, keepdim=True)).numpy()
        unlabeled = np.full(n, np.nan)
        outputs = PoolOutputs(index=torch.arange(n), features=torch.from_numpy(features), num_classes=10)

        chooser = build("probcover", normalize=False)
        pool_grid = __import__("al_lightning.strategies.probcover", fromlist=["coverage_points"]).coverage_points(
            outputs.features, None, False
        )[0]
        (radius_sq, _), purity_s = timed(lambda: chooser.radius_sq(pool_grid, None, 10))
        delta = round(float(pool_grid.from_grid_sq(torch.tensor(radius_sq)).sqrt()), 3)
        ours, ours_s = timed(lambda: build("probcover", delta=delta, normalize=False, max_mean_degree=n).select(outputs, args.budget).tolist())
        with lowest_first("skactiveml.pool._prob_cover"):
            lowest, sk_s = timed(
                lambda: SkProbCover(deltas=[delta], random_state=0).query(features, unlabeled, batch_size=args.budget).tolist()
            )
        shuffled = SkProbCover(deltas=[delta], random_state=0).query(features, unlabeled, batch_size=args.budget).tolist()
        first_diff = next((i for i, (a, b) in enumerate(zip(ours, lowest)) if a != b), None)
        covering = picks_until_covered(features, ours, delta)
        lines.append(
            f"| {n:,} | probcover δ = {delta} | {ours_s:.2f} | {sk_s:.2f} | {sk_s / ours_s:.1f}× | "
            f"{ours[:covering] == lowest[:covering]} for the {covering} picks that cover the pool "
            f"({len(set(ours) & set(lowest))}/{args.budget} in all"
            f"{'' if first_diff is None else f', first difference at pick {first_diff}'}) | "
            f"{len(set(ours) & set(shuffled))}/{args.budget} | δ from the purity rule in {purity_s:.1f} s; "
            f"after full cover both pick at random |"
        )
        print(lines[-1], flush=True)

        exact, ours_s = timed(
            lambda: build("maxherding", gamma=args.gamma, max_dense=n).select(outputs, args.budget).tolist()
        )
        truncated, trunc_s = timed(
            lambda: build("maxherding", gamma=args.gamma, max_dense=0, neighbours=args.neighbours)
            .select(outputs, args.budget)
            .tolist()
        )
        with lowest_first("skactiveml.pool._max_herding"):
            theirs, sk_s = timed(
                lambda: SkMaxHerding(metric="rbf", metric_dict={"gamma": args.gamma}, normalize_samples=True, random_state=0)
                .query(features, unlabeled, batch_size=args.budget)
                .tolist()
            )
        first_diff = next((i for i, (a, b) in enumerate(zip(exact, theirs)) if a != b), None)
        f_exact, f_trunc = coverage(features, exact, args.gamma), coverage(features, truncated, args.gamma)
        lines.append(
            f"| {n:,} | maxherding exact | {ours_s:.2f} | {sk_s:.2f} | {sk_s / ours_s:.1f}× | "
            f"{exact == theirs} ({len(set(exact) & set(theirs))}/{args.budget}"
            f"{'' if first_diff is None else f', first difference at pick {first_diff}'}) | | |"
        )
        print(lines[-1], flush=True)
        lines.append(
            f"| {n:,} | maxherding truncated k = {args.neighbours} | {trunc_s:.2f} | {sk_s:.2f} | "
            f"{sk_s / trunc_s:.1f}× | {len(set(truncated) & set(exact))}/{args.budget} of the exact picks | | "
            f"objective f(S) {f_trunc:.1f} vs exact {f_exact:.1f} ({f_trunc / f_exact:.4f}) |"
        )
        print(lines[-1], flush=True)
    out = HERE / "results" / f"coverage_vs_skactiveml_{args.machine}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

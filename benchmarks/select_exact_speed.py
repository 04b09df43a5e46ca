"""Exact selection at full size against plain references, as ratios measured in one process (issue 12, item 5).

    python benchmarks/select_exact_speed.py                        # full size: N = 1.28M, C = 1000, d = 2048, b = 10,000
    python benchmarks/select_exact_speed.py --scale 0.05           # a quick look at 1/20 of N and b
    python benchmarks/select_exact_speed.py --scale 0.1 --partitions 1    # one full-size partition (1/10 of the work)
    python benchmarks/select_exact_speed.py --device cuda --only base

Absolute seconds differ between machines, so each check is a ratio of two timings taken in
this process on the same data:

(a) BASE against one ``logits.topk(2)`` pass over the same logits (target: at most 2.5×), the
    best of three of each, taken in turns;
(b) partitioned coreset against a plain greedy k-center on the same 10 partitions, which
    updates every point's distance to its nearest centre after each pick (target: at least
    5× faster), with the same picks;
(c) partitioned BADGE against a plain k-means++ (D²) seeding on the same partitions and
    pooled embeddings, which updates every point after each pick (target: at least 3×
    faster), with the same picks for the same seed.

The pool is benchmarks/synthetic_pool.py's (memory-mapped), with 1 labeled point per 25.6
unlabeled ones as benchmarks/select_strategies.py (50,000 at full size). The plain versions
below are written plainly from the documented rule (al_lightning.strategies.distances): the
points and their labeled part on one fixed-point grid, held in float64, exact squared
distances by ordinary float64 products (a blocked matrix product for the labeled set, one
``torch.mv`` over the partition after each pick), the D² draw by an inverse CDF on the CPU.
Both sides compute exact values, so the picks must be equal. The plain versions measure
every point against every labeled point and update every point after every pick; the
strategies measure only what their bounds cannot rule out, in both parts. The table gives
each side's seconds for the distances to the labeled set ("initial s") and the ratio of what
is left, and each side's peak memory: the most resident memory (VmHWM, reset before the
call) above what the process held when the call began. Partitioned BADGE's sides also both
compute the pooled gradient embeddings of every point (O(N·(C + d))): a line after the
table gives that time too and the ratio of what is left after it. Results go to
benchmarks/results/select_exact_speed_<name>.md and .jsonl, with the load average before
and after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from synthetic_pool import load_pool

import al_lightning.strategies.coreset as coreset_module
import al_lightning.strategies.partitioned_badge as partitioned_badge_module
from al_lightning.quotas import even_shares
from al_lightning.seeding import derive_seed
from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.distances import dots, grid_exponent, on_grid
from al_lightning.strategies.gradient_embedding import pool_grid, pooled_gradient_embedding
from al_lightning.strategies.partitions import paired_partitions

HERE = Path(__file__).resolve().parent
FULL_N, CLASSES, DIM, FULL_BUDGET, PARTITIONS = 1_280_000, 1000, 2048, 10_000, 10
TARGETS = {"base": ("<=", 2.5), "partitioned_coreset": (">=", 5.0), "partitioned_badge": (">=", 3.0)}


def resident_kb() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process, in kB, from /proc/self/status."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                found[key] = int(value.split()[0])
    return found


class Clock:
    """Wall-clock seconds of a call, the device synchronised before and after, and its peak memory.

    ``peak_mb`` after a call: the most resident memory during it above what the process held
    when it began (VmHWM reset through /proc/self/clear_refs), or CUDA's peak allocation on a GPU.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = float("nan")

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], object]) -> tuple[object, float]:
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
        else:
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")  # VmHWM := VmRSS
            before = resident_kb()["VmRSS"] * 1024
        start = time.perf_counter()
        value = fn()
        self.sync()
        seconds = time.perf_counter() - start
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = resident_kb()["VmHWM"] * 1024
        self.peak_mb = (peak - before) / 2**20
        return value, seconds


# The plain references: after each pick, every point of the partition is updated.


def plain_grid(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The documented grid, in float64: B = min(24, ⌊(51 − ⌈log₂ d⌉)/2⌋), e with 2^(B−1) ≤ m·2^e < 2^B, round(x·2^e)."""
    dim = tensors[0].shape[1]
    bits = min(24, (51 - math.ceil(math.log2(dim))) // 2)
    largest = max(max(-float(t.min()), float(t.max())) for t in tensors if t.numel())
    exponent = bits - math.frexp(largest)[1] if largest else 0
    grids = []
    for t in tensors:
        q = torch.empty(t.shape, dtype=torch.float64, device=t.device)
        for start in range(
            0, t.shape[0], 65_536
        ):  # in blocks, not a float64 copy of the whole input and two temporaries
            q[start : start + 65_536] = torch.round(t[start : start + 65_536].double() * 2.0**exponent)
        grids.append(q)
    return grids


def plain_nearest(q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(n,) exact squared distance to the nearest row of ``c``: ‖x‖² + ‖c‖² − 2 x·c, blocks of 4,096 rows."""
    c_sq = (c * c).sum(1)
    return torch.cat([((b * b).sum(1)[:, None] + c_sq[None, :] - 2 * (b @ c.T)).amin(1) for b in q.split(4096)])


def plain_k_center(
    features: torch.Tensor, centres: torch.Tensor, budget: int, generator: torch.Generator, spent: dict
) -> torch.Tensor:
    """Greedy k-center (Sener & Savarese's Algorithm 1) on the grid, with a full pass over the partition after every pick."""
    q, c = plain_grid([features, centres])
    sq = (q * q).sum(1)
    start = time.perf_counter()
    if c.shape[0] > 0:
        min_sq = plain_nearest(q, c)
        pick = int(min_sq.argmax())
    else:
        min_sq = torch.full((q.shape[0],), torch.inf, dtype=torch.float64, device=q.device)
        pick = int(torch.randint(q.shape[0], (1,), generator=generator))
    spent["initial"] += time.perf_counter() - start
    picks = []
    for step in range(budget):
        picks.append(pick)
        if step + 1 == budget:
            break
        min_sq = torch.minimum(min_sq, sq + sq[pick] - 2 * torch.mv(q, q[pick]))
        min_sq[pick] = -1.0  # a centre is never picked again
        pick = int(min_sq.argmax())  # the farthest point, lowest position among equals
    return torch.tensor(picks, dtype=torch.long)


def plain_draw(weights: torch.Tensor, taken: list[int], generator: torch.Generator) -> int:
    """Inverse-CDF draw ∝ ``weights``: a float64 running sum on the CPU; uniform over the rest if all are 0."""
    cdf = torch.cumsum(weights.cpu(), dim=0)
    total = cdf[-1:]
    if float(total) > 0:
        u = torch.rand(1, generator=generator, dtype=torch.float64) * total
        return int(torch.searchsorted(cdf, u, right=True)) if bool(u < total) else int(torch.searchsorted(cdf, total))
    free = torch.ones(weights.numel(), dtype=torch.bool)
    free[taken] = False
    candidates = free.nonzero().squeeze(1)
    return int(candidates[torch.randint(candidates.numel(), (1,), generator=generator)])


def plain_d2(
    x: torch.Tensor, centres: Optional[torch.Tensor], budget: int, generator: torch.Generator, spent: dict
) -> torch.Tensor:
    """k-means++ seeding (D² sampling) on the grid, with a full pass over the partition after every pick."""
    q, *c = plain_grid([x] if centres is None else [x, centres])
    sq = (q * q).sum(1)
    start = time.perf_counter()
    nearest = plain_nearest(q, c[0]) if c else None
    spent["initial"] += time.perf_counter() - start
    picks: list[int] = []
    for step in range(budget):
        pick = int(sq.argmax()) if nearest is None else plain_draw(nearest, picks, generator)
        picks.append(pick)
        if step + 1 == budget:
            break
        new = sq + sq[pick] - 2 * torch.mv(q, q[pick])
        nearest = new if nearest is None else torch.minimum(nearest, new)
        nearest[pick] = 0.0
    return torch.tensor(picks, dtype=torch.long)


def partition_generator(seed: int, number: int) -> torch.Generator:
    """Partition ``number``'s own generator, as the partitioned strategies seed it."""
    return torch.Generator().manual_seed(derive_seed(seed, "partition", number))


def plain_partitioned_coreset(out: PoolOutputs, budget: int, seed: int, parts: int, spent: dict) -> torch.Tensor:
    pairs = paired_partitions(len(out), out.labeled_features.shape[0], parts, torch.Generator().manual_seed(seed))
    picks = []
    for number, ((unlabeled, centres), quota) in enumerate(zip(pairs, even_shares(budget, parts))):
        if quota:
            generator = partition_generator(seed, number)
            rows = unlabeled.to(out.features.device)
            picks.append(
                unlabeled[
                    plain_k_center(
                        out.features[rows], out.labeled_features[centres.to(rows.device)], quota, generator, spent
                    )
                ]
            )
    return out.index[torch.cat(picks).to(out.index.device)]


def plain_partitioned_badge(out: PoolOutputs, budget: int, seed: int, parts: int, spent: dict) -> torch.Tensor:
    labeled = out.labeled_features
    pairs = paired_partitions(len(out), labeled.shape[0], parts, torch.Generator().manual_seed(seed))
    grid = pool_grid(out.logits.shape[1])
    picks = []
    for number, ((unlabeled, labeled_part), take) in enumerate(zip(pairs, even_shares(budget, parts))):
        if take == 0:
            continue
        generator = partition_generator(seed, number)
        rows = unlabeled.to(out.logits.device)
        x = pooled_gradient_embedding(out.logits[rows], out.features[rows], grid)
        y = None
        if labeled_part.numel() > 0:
            part = labeled[labeled_part.to(labeled.device)]
            logits = torch.addmm(out.bias.float(), part.float(), out.weight.float().T)  # as the strategy computes them
            y = pooled_gradient_embedding(logits, part, grid)
        picks.append(unlabeled[plain_d2(x, y, take, generator, spent).to(unlabeled.device)])
    return out.index[torch.cat(picks).to(out.index.device)]


@contextlib.contextmanager
def timed_initial(module: object, names: tuple[str, ...], spent: dict, key: str = "initial"):
    """Add the seconds spent in ``module.<name>`` for each of ``names`` (e.g. the initial distances to the labeled set) to ``spent[key]``."""
    originals = {name: getattr(module, name) for name in names}
    depth = f"{key} depth"  # a timed call inside another one (of this key) is not counted twice

    def timer(original):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            spent[depth] = spent.get(depth, 0) + 1
            try:
                value = original(*args, **kwargs)
            finally:
                spent[depth] -= 1
            if spent[depth] == 0:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - start
            return value

        return timed

    for name, original in originals.items():
        setattr(module, name, timer(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(module, name, original)


def first_difference(a: torch.Tensor, b: torch.Tensor) -> Optional[int]:
    if torch.equal(a.cpu(), b.cpu()):
        return None
    if a.numel() != b.numel():
        return min(a.numel(), b.numel())
    return int((a.cpu() != b.cpu()).nonzero()[0])


def row(check: str, n: int, budget: int, labeled: int, args: argparse.Namespace, **values: object) -> dict:
    sense, target = TARGETS[check]
    ratio = values["ratio"]
    return {
        "check": check,
        "n": n,
        "classes": CLASSES,
        "dim": DIM,
        "budget": budget,
        "labeled": labeled,
        "partitions": args.partitions if check != "base" else None,
        "device": args.device,
        "threads": args.threads,
        **values,
        "target": f"{sense} {target}",
        "met": bool(ratio <= target if sense == "<=" else ratio >= target),
    }


def read_through(values: torch.Tensor, rows: int = 65_536) -> None:
    """Read a memory-mapped array once, so that neither side of a check pays for the disk."""
    for start in range(0, values.shape[0], rows):
        values[start : start + rows].sum()


def check_base(pool: dict, n: int, budget: int, labeled: int, clock: Clock, args: argparse.Namespace) -> dict:
    """(a) BASE against one top-2 pass over the same logits, the best of three of each, taken in turns."""
    device = clock.device
    read_through(pool["logits"])
    logits = pool["logits"][labeled:].to(device)
    out = PoolOutputs(index=torch.arange(n, device=device), logits=logits, weight=pool["weight"].to(device))
    warm = PoolOutputs(index=out.index[:20_000], logits=logits[:20_000], weight=out.weight)
    build("base").select(warm, max(1, budget // 100))  # threads and allocator, as in a long-running job
    logits[:20_000].topk(2, dim=1)
    top2_s, base_s = [], []
    for _ in range(3):
        top2_s.append(clock(lambda: logits.topk(2, dim=1))[1])
        base_s.append(clock(lambda: build("base").select(out, budget))[1])
    top2, base = min(top2_s), min(base_s)
    return row(
        "base",
        n,
        budget,
        0,
        args,
        ours_s=base,
        reference="one logits.topk(2) pass",
        reference_s=top2,
        ratio=base / top2,
        same_picks=None,
        initial_s=None,
    )


def check_partitioned(
    check: str, pool: dict, n: int, budget: int, labeled: int, clock: Clock, args: argparse.Namespace
) -> dict:
    """(b) or (c): the strategy against its plain reference on the same partitions, the same picks asserted."""
    device, parts = clock.device, args.partitions
    plain = plain_partitioned_coreset if check == "partitioned_coreset" else plain_partitioned_badge
    for field in ("features", "logits") if check == "partitioned_badge" else ("features",):
        read_through(pool[field])
    features = pool["features"][labeled:]
    out = PoolOutputs(
        index=torch.arange(n, device=device),
        logits=pool["logits"][labeled:].to(device) if check == "partitioned_badge" else None,
        features=features.to(device) if device.type != "cpu" else features,
        weight=pool["weight"].to(device),
        bias=pool["bias"].to(device),
        labeled_features=pool["features"][:labeled].to(device),
        num_classes=CLASSES,
    )
    strategy = build(check, seed=args.seed, partitions=parts)
    small = min(n, 20 * parts * 64)  # warm-up on a slice: threads, allocator, page cache of the first rows
    warm = PoolOutputs(
        **{
            **vars(out),
            "index": out.index[:small],
            "features": out.features[:small],
            "logits": None if out.logits is None else out.logits[:small],
        }
    )
    strategy.select(warm, parts * 2)
    plain(warm, parts * 2, args.seed, parts, {"initial": 0.0})
    ours_spent, spent = {"initial": 0.0}, {"initial": 0.0}
    initial = (
        (coreset_module, ("nearest_centre_upper_bounds", "nearest_centres"))
        if check == "partitioned_coreset"
        else (partitioned_badge_module, ("nearest_centres",))
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(timed_initial(*initial, ours_spent))
        if check == "partitioned_badge":  # its initial distances, pruned by rank-one bounds
            stack.enter_context(timed_initial(partitioned_badge_module.RankOneBounds, ("nearest",), ours_spent))
        if check == "partitioned_badge":  # both sides embed the same points the same way
            stack.enter_context(
                timed_initial(partitioned_badge_module, ("pooled_gradient_embedding",), ours_spent, "embed")
            )
        ours, ours_s = clock(lambda: strategy.select(out, budget))
    ours_peak = clock.peak_mb
    with timed_initial(sys.modules[__name__], ("pooled_gradient_embedding",), spent, "embed"):
        reference, plain_s = clock(lambda: plain(out, budget, args.seed, parts, spent))
    plain_peak = clock.peak_mb
    diff = first_difference(ours, reference)
    rest = (plain_s - spent["initial"]) / max(1e-9, ours_s - ours_spent["initial"])
    result = row(
        check,
        n,
        budget,
        labeled,
        args,
        ours_s=ours_s,
        reference="plain, every point after every pick",
        reference_s=plain_s,
        ratio=plain_s / ours_s,
        same_picks=diff is None,
        first_difference=diff,
        initial_s=spent["initial"],
        ours_initial_s=ours_spent["initial"],
        ratio_after_initial=rest,
        ours_peak_mb=ours_peak,
        reference_peak_mb=plain_peak,
    )
    if check == "partitioned_badge":
        shared, ours_shared = spent["initial"] + spent["embed"], ours_spent["initial"] + ours_spent["embed"]
        result["embed_s"], result["ours_embed_s"] = spent["embed"], ours_spent["embed"]
        result["ratio_after_shared"] = (plain_s - shared) / max(1e-9, ours_s - ours_shared)
    if check == "partitioned_coreset":  # is the plain pass handicapped? float64 mv on a float64 grid against ours
        part = out.features[: n // parts].to(device)
        exponent = grid_exponent([part], DIM)
        grid32 = on_grid(part, exponent)
        grid64 = grid32.double()
        dots(grid32, grid32[0]), torch.mv(grid64, grid64[0])
        result["pass_ours_s"] = min(clock(lambda: dots(grid32, grid32[1]))[1] for _ in range(3))
        result["pass_mv_s"] = min(clock(lambda: torch.mv(grid64, grid64[1]))[1] for _ in range(3))
        del grid32, grid64
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply N, the labeled set and b by this")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--only", nargs="*", choices=list(TARGETS), help="checks to run (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the partitioned strategies")
    parser.add_argument(
        "--partitions",
        type=int,
        default=PARTITIONS,
        help="partitions (10 as the paper; --scale 0.1 --partitions 1 is one full-size partition)",
    )
    parser.add_argument("--name", default=platform.node() or "machine", help="results file suffix")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = Clock(torch.device(args.device))

    parts = args.partitions
    n = max(parts, int(FULL_N * args.scale))
    budget = max(parts, int(FULL_BUDGET * args.scale))
    labeled = max(1, round(n / 25.6))
    checks = args.only or list(TARGETS)
    pool = load_pool(n + labeled, CLASSES, DIM, {"logits", "features"}, mmap=True)
    load_before = os.getloadavg()
    rows: list[dict] = []

    if "base" in checks:
        rows.append(check_base(pool, n, budget, labeled, clock, args))
        print(json.dumps(rows[-1]), flush=True)
    for check in ("partitioned_coreset", "partitioned_badge"):
        if check in checks:
            rows.append(check_partitioned(check, pool, n, budget, labeled, clock, args))
            print(json.dumps(rows[-1]), flush=True)

    load_after = os.getloadavg()
    for r in rows:
        r["load_before"], r["load_after"] = load_before, load_after
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    with open(out_dir / f"select_exact_speed_{args.name}.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    lines = [
        f"Device {args.device}, {args.threads} threads; N = {n:,}, C = {CLASSES}, d = {DIM}, b = {budget:,}; "
        f"partitioned: {parts} partitions, {labeled:,} labeled. Load average (1, 5, 15 min) "
        f"{', '.join(f'{v:.2f}' for v in load_before)} before, {', '.join(f'{v:.2f}' for v in load_after)} after.",
        "",
        "| check | ours s | reference | reference s | ratio | target | same picks | initial s (ours, reference) "
        "| ratio after initial | peak MB (ours, reference) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        same = (
            "—"
            if r["same_picks"] is None
            else ("yes" if r["same_picks"] else f"NO (from pick {r['first_difference']})")
        )
        initial = "—" if r["initial_s"] is None else f"{r['ours_initial_s']:.2f}, {r['initial_s']:.2f}"
        after = "—" if r.get("ratio_after_initial") is None else f"{r['ratio_after_initial']:.1f}×"
        peak = "—" if "ours_peak_mb" not in r else f"{r['ours_peak_mb']:,.0f}, {r['reference_peak_mb']:,.0f}"
        lines.append(
            f"| {r['check']} | {r['ours_s']:.2f} | {r['reference']} | {r['reference_s']:.2f} | {r['ratio']:.2f}× | "
            f"{r['target']} | {same} | {initial} | {after} | {peak} |"
        )
    for r in rows:
        if "embed_s" in r:
            lines += [
                "",
                f"{r['check']}: both sides also embed the points (pooled gradient embeddings): "
                f"{r['ours_embed_s']:.2f} s ours, {r['embed_s']:.2f} s reference; "
                f"after the initial distances and the embedding, {r['ratio_after_shared']:.1f}× faster.",
            ]
        if "pass_ours_s" in r:
            lines += [
                "",
                f"One pass over a partition's grid: ours (float32 grid, float64 blocks) {r['pass_ours_s'] * 1e3:.1f} ms, "
                f"one float64 torch.mv on a float64 grid (the plain one) {r['pass_mv_s'] * 1e3:.1f} ms.",
            ]
    (out_dir / f"select_exact_speed_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if any(r["same_picks"] is False for r in rows):
        sys.exit("different picks from the plain reference")


if __name__ == "__main__":
    main()

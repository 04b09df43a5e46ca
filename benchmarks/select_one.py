"""Time one strategy's ``select`` on one synthetic pool; print a JSON line (run by select_strategies.py).

The pool's inputs (only the fields the strategy needs) are loaded first; peak memory above
them is the growth of the process's maximum resident set during ``select``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from synthetic_pool import load_pool

from al_lightning.strategies import PoolOutputs, build


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("strategy")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--labeled", type=int, default=0, help="labeled points (taken from the same generator)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    strategy = build(args.strategy, seed=0)
    fields = set(strategy.requires)
    need = {"logits", "features", "targets"} & (fields | ({"features"} if "labeled_features" in fields else set()))
    if "labeled_targets" in fields:
        need.add("targets")
    pool = load_pool(args.n + args.labeled, args.classes, args.dim, need)
    split = args.labeled
    outputs = PoolOutputs(
        index=torch.arange(args.n),
        logits=pool["logits"][split:] if "logits" in fields else None,
        features=pool["features"][split:] if "features" in fields else None,
        weight=pool["weight"] if "weight" in fields else None,
        bias=pool["bias"] if "bias" in fields else None,
        labeled_features=pool["features"][:split] if "labeled_features" in fields else None,
        labeled_targets=pool["targets"][:split] if "labeled_targets" in fields else None,
        targets=pool["targets"][split:] if "targets" in fields else None,
    )
    input_mb = sum(t.numel() * t.element_size() for t in pool.values()) / 2**20
    before = peak_mb()
    start = time.perf_counter()
    chosen = strategy.select(outputs, args.budget)
    seconds = time.perf_counter() - start
    assert chosen.numel() == min(args.budget, args.n)
    print(json.dumps({
        "strategy": args.strategy, "n": args.n, "classes": args.classes, "dim": args.dim, "budget": args.budget,
        "labeled": args.labeled, "seconds": round(seconds, 3), "peak_mb_above_inputs": round(max(0.0, peak_mb() - before), 1),
        "input_mb": round(input_mb, 1),
    }))


if __name__ == "__main__":
    main()

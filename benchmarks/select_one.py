"""Time one strategy's ``select`` on one synthetic pool; print a JSON line (run by select_strategies.py).

The pool's inputs (only the fields the strategy needs) are loaded first and one small
selection (on the first 1% of the pool) warms up threads and the allocator; the time is that
of one ``select`` on the whole pool, and the memory above the inputs is the process's peak
resident set during the warm-up and the timed selection (the kernel's counter, reset once
the inputs are loaded) minus its resident set at that moment. With ``--device cuda`` the
inputs are moved to the GPU first, the clock waits for the device, and the memory is the
peak of CUDA's allocator above the inputs.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from synthetic_pool import load_pool

from al_lightning.strategies import PoolOutputs, build


def resident_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident since the last reset) of this process."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def reset_peak() -> None:
    """Restart the kernel's peak-resident-set counter (Linux: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("strategy")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--labeled", type=int, default=0, help="labeled points (taken from the same generator)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--options", default="{}", help="the strategy's own options, as JSON (--al.strategy_args)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    strategy = build(args.strategy, seed=0, **json.loads(args.options))
    fields = set(strategy.requires) | set(strategy.accepts)  # what the query callback gives it under the simulated oracle
    need = {"logits", "features", "targets"} & (fields | ({"features"} if "labeled_features" in fields else set()))
    if "labeled_targets" in fields:
        need.add("targets")
    pool = {name: tensor.to(device) for name, tensor in load_pool(args.n + args.labeled, args.classes, args.dim, need).items()}
    split = args.labeled
    outputs = PoolOutputs(
        index=torch.arange(args.n, device=device),
        logits=pool["logits"][split:] if "logits" in fields else None,
        features=pool["features"][split:] if "features" in fields else None,
        weight=pool["weight"] if "weight" in fields else None,
        bias=pool["bias"] if "bias" in fields else None,
        labeled_features=pool["features"][:split] if "labeled_features" in fields else None,
        labeled_targets=pool["targets"][:split] if "labeled_targets" in fields else None,
        targets=pool["targets"][split:] if "targets" in fields else None,
        num_classes=args.classes,
    )
    input_mb = sum(t.numel() * t.element_size() for t in pool.values()) / 2**20
    reset_peak()
    before = resident_mb("VmRSS") if device.type == "cpu" else torch.cuda.memory_allocated(device) / 2**20
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm = max(args.budget, len(outputs) // 100)
    head = {f: getattr(outputs, f) for f in ("weight", "bias", "labeled_features", "labeled_targets", "num_classes")}
    sliced = {f: getattr(outputs, f)[:warm] for f in ("index", "logits", "features", "targets") if getattr(outputs, f) is not None}
    strategy.select(PoolOutputs(**sliced, **head), max(1, args.budget // 100))
    synchronize(device)
    start = time.perf_counter()
    chosen = strategy.select(outputs, args.budget)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = resident_mb("VmHWM") if device.type == "cpu" else torch.cuda.max_memory_allocated(device) / 2**20
    assert chosen.numel() == min(args.budget, args.n)
    print(json.dumps({
        "strategy": args.strategy, "n": args.n, "classes": args.classes, "dim": args.dim, "budget": args.budget,
        "labeled": args.labeled, "seconds": round(seconds, 3), "peak_mb_above_inputs": round(peak - before, 1),
        "input_mb": round(input_mb, 1), "device": args.device, "options": json.loads(args.options),
    }))


if __name__ == "__main__":
    main()

"""Our BALD score against baal's ``BALD`` heuristic on the same sampled probabilities.

    pip download --no-deps baal -d /tmp/baal_dl && unzip -q -o /tmp/baal_dl/baal-*.whl -d /tmp/baal_dl/x
    python benchmarks/bald_vs_baal.py /tmp/baal_dl/x

baal is not a dependency: this loads only its heuristics module (numpy, scipy, torch) from an
unpacked wheel, with its one in-package import (``baal.utils.array_utils``) loaded the same way,
so baal's other dependencies need not be installed. It draws a pool of features and a head,
samples T dropout-perturbed logits with our consistent masks
(:func:`~al_lightning.strategies.mc_dropout.perturbed_logits`), and compares

* the mutual information per point (ours: :func:`~al_lightning.strategies.bald.mutual_information`
  in float64; baal: ``BALD().compute_score`` on the softmax probabilities laid out as its
  [N, C, T]), and
* the b points each ranks first (baal: ``BALD()(probs)`` returns the ranking, highest first),
  as a set, since exact ties may be ordered differently.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.bald import mutual_information
from al_lightning.strategies.mc_dropout import dropout_masks, perturbed_logits


def load_baal_heuristics(root: Path) -> types.ModuleType:
    """``baal.active.heuristics.heuristics`` from an unpacked baal wheel at ``root``, without importing ``baal``."""
    for name in ("baal", "baal.utils", "baal.active", "baal.active.heuristics"):
        package = types.ModuleType(name)
        package.__path__ = [str(root / name.replace(".", "/"))]
        sys.modules.setdefault(name, package)

    def load(name: str, path: Path) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    load("baal.utils.array_utils", root / "baal" / "utils" / "array_utils.py")
    return load("baal.active.heuristics.heuristics", root / "baal" / "active" / "heuristics" / "heuristics.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baal_root", type=Path, help="folder holding the unpacked baal package (baal/...)")
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    heuristics = load_baal_heuristics(args.baal_root)

    g = torch.Generator().manual_seed(args.seed)
    features = torch.randn(args.points, args.dim, generator=g, dtype=torch.float64)
    weight = torch.randn(args.classes, args.dim, generator=g, dtype=torch.float64) / args.dim**0.5
    bias = torch.randn(args.classes, generator=g, dtype=torch.float64)
    masks = dropout_masks(args.dim, args.samples, args.dropout, args.seed)
    logits = perturbed_logits(features, weight, bias, masks, args.dropout)  # (N, T, C)

    ours = mutual_information(logits)
    probs = logits.softmax(dim=2).permute(0, 2, 1).numpy()  # baal's layout: [N, C, T]
    theirs = torch.from_numpy(heuristics.BALD().compute_score(probs))
    difference = (ours - theirs).abs().max().item()
    print(f"mutual information, {args.points} points, T = {args.samples}, C = {args.classes}:")
    print(f"  largest |ours − baal| = {difference:.3e} nats (MI up to {ours.max().item():.3f})")

    outputs = PoolOutputs(index=torch.arange(args.points), features=features, weight=weight, bias=bias)
    strategy = build("bald", dropout=args.dropout, samples=args.samples, seed=args.seed)
    chosen = set(strategy.select(outputs, args.budget).tolist())
    baal_top = set(heuristics.BALD()(probs)[: args.budget].tolist())
    print(f"top {args.budget}: {len(chosen & baal_top)} of {args.budget} in common (bald.select vs baal's ranking)")
    if difference > 1e-9 or chosen != baal_top:
        raise SystemExit("MISMATCH")
    print("match")


if __name__ == "__main__":
    main()

"""The paper's experiments as sweep grids: ``python -m al_lightning.sweep --grid c2 --out ...``.

A grid names a config in ``configs/``, the strategies the paper compares in that setting and
as many seeds as the paper averages over (Section 5 and the figure captions). ``--config``,
``--strategies`` and ``--seeds`` replace a grid's own; any other argument is a ``train.py``
override, as in every sweep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from al_lightning.errors import ConfigurationError

#: Section 5's baselines i-xi and BASE: what Figures 4 and 5 (CIFAR-10) compare.
PAPER_STRATEGIES = (
    "random",
    "balanced_random",
    "coreset",
    "partitioned_coreset",
    "badge",
    "partitioned_badge",
    "confidence",
    "margin",
    "vaal",
    "balancing",
    "mase",
    "base",
)
#: On ImageNet the paper leaves out coreset and BADGE (Table 4: prohibitive at that scale, and
#: replaced by their partitioned variants) and the balancing sampler (one label at a time):
#: Section 5, "Scalability of baseline methods"; Figure 2 compares the rest.
IMAGENET_STRATEGIES = tuple(s for s in PAPER_STRATEGIES if s not in ("coreset", "badge", "balancing"))


@dataclass(frozen=True)
class Grid:
    """One of the paper's experiments: its config, strategies and seeds, and where they come from."""

    name: str
    config: str
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    source: str


GRIDS = {
    grid.name: grid
    for grid in (
        Grid("a1", "cifar10_a1.yaml", PAPER_STRATEGIES, (0, 1, 2, 3, 4), "A-I, Figure 5: 5 runs"),
        Grid("b1", "cifar10_lt_b1.yaml", PAPER_STRATEGIES, (0, 1, 2), "B-I, Figure 4: 3 runs"),
        Grid("c1", "imagenet_c1.yaml", IMAGENET_STRATEGIES, (0, 1, 2), "C-I, Figure 2a/c: 3 runs"),
        Grid("c2", "imagenet_c2.yaml", IMAGENET_STRATEGIES, (0, 1, 2), "C-II, Figure 2b/d: 3 runs"),
        Grid("d", "imagenet_vit_d.yaml", IMAGENET_STRATEGIES, (0, 1, 2), "D: the paper reports no figure; C-II's strategies and runs"),
        Grid("table1", "imagenet_scratch_table1.yaml", ("vaal", "random"), (0,), "Table 1: VAAL and random, one run each"),
        Grid("table2", "imagenet_esvit_table2.yaml", ("base", "random"), (0,), "Table 2: BASE and random, one run each"),
    )
}

_ROMAN = {"i": "1", "ii": "2"}


def grid_named(text: str) -> Grid:
    """The grid for ``c2``, ``C-II``, ``table2`` or ``Table 2`` (case, spaces and dashes ignored)."""
    key = re.sub(r"[\s_-]", "", text.lower())
    match = re.fullmatch(r"([abc])(i{1,2}|[12])", key)
    if match:
        key = match.group(1) + _ROMAN.get(match.group(2), match.group(2))
    if key not in GRIDS:
        raise ConfigurationError(f"unknown grid {text!r}; choose from: {', '.join(GRIDS)} (the paper's A-I, B-I, C-I, C-II, D, Table 1, Table 2)")
    return GRIDS[key]

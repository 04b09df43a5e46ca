"""Splitting a count as evenly as possible: per-class quotas, per-partition budgets, balanced draws."""

from __future__ import annotations


def even_shares(total: int, parts: int) -> list[int]:
    """``parts`` counts summing to ``total``: ⌊total/parts⌋ each, plus one for the first ``total mod parts``.

    The rule of the paper's code for BASE's class quotas and the partitions' budgets
    (e.g. ``even_shares(10, 4) == [3, 3, 2, 2]``).
    """
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]

"""The partition rule of ``partitioned_coreset`` and ``partitioned_badge``, written out plainly as a test reference."""

from __future__ import annotations

import hashlib

import torch


def plain_partitions(num_unlabeled: int, num_labeled: int, parts: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """``parts`` pairs (unlabeled positions, labeled positions), as the strategies document them.

    A generator seeded with ``seed`` shuffles the unlabeled positions, then the labeled ones;
    each shuffle is cut into ``parts`` consecutive runs whose lengths differ by at most one,
    the longer runs first.
    """
    g = torch.Generator().manual_seed(seed)
    unlabeled = torch.randperm(num_unlabeled, generator=g).tolist()
    labeled = torch.randperm(num_labeled, generator=g).tolist()

    def cut(order: list[int]) -> list[list[int]]:
        size, extra = divmod(len(order), parts)
        bounds = [0]
        for i in range(parts):
            bounds.append(bounds[-1] + size + (i < extra))
        return [order[a:b] for a, b in zip(bounds, bounds[1:])]

    return list(zip(cut(unlabeled), cut(labeled)))


def plain_shares(budget: int, parts: int) -> list[int]:
    """Part i's share of the budget: ⌊b/p⌋ + [i < b mod p]."""
    return [budget // parts + (i < budget % parts) for i in range(parts)]


def partition_generator(seed: int, number: int) -> torch.Generator:
    """Partition ``number``'s own generator, as documented: seeded with ``derive_seed(seed, "partition", number)``.

    ``derive_seed`` written out: an 8-byte BLAKE2b digest of the parts' repr, read little-endian, shifted right one bit.
    """
    digest = hashlib.blake2b(repr((seed, "partition", number)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)

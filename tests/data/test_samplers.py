"""Samplers split work across ranks exactly: no padding, the same global batches as one process."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from al_lightning.data.datasets import BatchView
from al_lightning.data.samplers import GlobalBatchSampler, ShardSampler
from al_lightning.errors import ConfigurationError


@pytest.mark.parametrize("length", [5, 16, 32, 33, 34, 35, 38, 47, 50])
def test_two_ranks_take_the_global_batches_one_rank_takes(length):
    one = list(GlobalBatchSampler(length, batch_size=16, seed=7))
    ranks = [list(GlobalBatchSampler(length, batch_size=16, seed=7, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one)  # DDP needs the same number of steps on every rank
    assert sorted(i for b in one for i in b) == list(range(length))  # one process uses every item
    for step, items in enumerate(one):
        both = ranks[0][step] + ranks[1][step]
        assert len(ranks[0][step]) == len(ranks[1][step])
        if len(items) % 2 == 0:
            assert both == items
        else:  # one item of an odd global batch waits for the next epoch
            assert both == items[: len(items) - 1]
    # No batch of one anywhere (BatchNorm in training mode cannot take it).
    assert all(len(b) >= 2 for b in one + ranks[0] + ranks[1])


def test_a_partial_last_batch_joins_the_one_before_it():
    assert [len(b) for b in GlobalBatchSampler(33, 16, seed=0)] == [16, 17]
    assert [len(b) for b in GlobalBatchSampler(47, 16, seed=0)] == [16, 31]
    assert [len(b) for b in GlobalBatchSampler(10, 16, seed=0)] == [10]
    assert [len(b) for b in GlobalBatchSampler(1, 16, seed=0)] == []  # a single label cannot make a batch
    assert [len(b) for b in GlobalBatchSampler(35, 16, seed=0, rank=1, world_size=2)] == [8, 9]


def test_the_shuffle_follows_the_seed():
    assert list(GlobalBatchSampler(40, 8, seed=1)) == list(GlobalBatchSampler(40, 8, seed=1))
    assert list(GlobalBatchSampler(40, 8, seed=1)) != list(GlobalBatchSampler(40, 8, seed=2))


def test_a_global_batch_must_split_evenly():
    with pytest.raises(ConfigurationError, match="batch_size=10 is the global batch and must be divisible by the 4 ranks"):
        GlobalBatchSampler(100, batch_size=10, seed=0, rank=0, world_size=4)


def test_a_loader_over_batch_views_yields_those_batches():
    data = [(torch.tensor([float(i)]), i) for i in range(33)]
    sampler = GlobalBatchSampler(33, 16, seed=3)
    loader = DataLoader(BatchView(data), batch_size=None, sampler=sampler)
    assert [targets.tolist() for _, targets in loader] == list(sampler)


def test_shards_cover_every_item_once():
    shards = [list(ShardSampler(11, rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(11))
    assert [len(ShardSampler(11, r, 3)) for r in range(3)] == [4, 4, 3]


def test_a_loader_whose_batch_sampler_was_replaced_says_how_to_keep_it():
    # Lightning's distributed sampler (use_distributed_sampler=True) hands BatchView single positions.
    with pytest.raises(ConfigurationError, match="use_distributed_sampler=False"):
        BatchView([(torch.zeros(1), 0)])[0]

"""Partitioned strategies in the query: each partition scored and selected on one rank, same picks as one process."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from al_lightning.distributed import RankFailedError
from al_lightning.inference import InferenceLoop
from al_lightning.models.classifier import ActiveClassifier
from al_lightning.query.scoring import PoolScorer
from al_lightning.query.selection import select_from_pool
from al_lightning.strategies import PoolOutputs, build
from tests.strategies.plain_partitions import plain_partitions

N, LABELED, DIM, CLASSES = 90, 30, 6, 4
STRATEGIES = [("partitioned_coreset", {"partitions": 5}), ("partitioned_badge", {"partitions": 5, "pooled_dim": 8})]


def training_set():
    """A training set of N + LABELED points: the first LABELED labeled, features = inputs (identity trunk)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(N + LABELED, DIM, generator=generator)
    labels = torch.cat([torch.randint(CLASSES, (LABELED,), generator=generator), torch.full((N,), -1)])
    model = ActiveClassifier(num_classes=CLASSES, backbone="identity", input_dim=DIM)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(CLASSES, DIM, generator=generator))
        model.head.bias.zero_()
    return inputs, labels, model


def choose(name, kwargs, budget, asked):
    """``select_from_pool`` as the query runs it; ``asked`` collects the indices each subset loader was made for."""
    inputs, labels, model = training_set()
    pool, labeled = torch.arange(LABELED, LABELED + N), torch.arange(LABELED)

    def subset_loader(indices):
        asked.append(indices.tolist())
        return DataLoader(TensorDataset(inputs[indices], indices), batch_size=7)

    sharded = DataLoader(TensorDataset(inputs[:0], pool[:0]))  # must not be read on this path
    strategy = build(name, seed=3, **kwargs)
    scorer = PoolScorer(InferenceLoop(model, torch.device("cpu")))
    return select_from_pool(strategy, budget, scorer, sharded, pool, sharded, labels, None, subset_loader, labeled)


def whole_outputs():
    inputs, labels, model = training_set()
    with torch.no_grad():
        logits = model.classify(inputs)
    return PoolOutputs(
        index=torch.arange(LABELED, LABELED + N),
        logits=logits[LABELED:],
        features=inputs[LABELED:],
        weight=model.head.weight.detach(),
        bias=model.head.bias.detach(),
        labeled_features=inputs[:LABELED],
        labeled_targets=labels[:LABELED],
    )


@pytest.mark.parametrize("name, kwargs", STRATEGIES)
def test_one_process_scores_partition_by_partition_and_picks_what_select_picks(name, kwargs):
    asked = []
    chosen = choose(name, kwargs, 23, asked)
    assert chosen.tolist() == build(name, seed=3, **kwargs).select(whole_outputs(), 23).tolist()
    # Each loader covers one partition's unlabeled or labeled part, as the documented rule cuts them.
    parts = plain_partitions(N, LABELED, 5, seed=3)
    expected = []
    for unlabeled, labeled in parts:
        expected += [[LABELED + p for p in unlabeled], labeled]
    assert asked == expected


def _rank_main(rank, world, port, name, kwargs, budget, results, fail_rank):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        if rank == fail_rank:  # this rank's partition work raises
            type(build(name, **kwargs))._select_in_partition = _fail
        asked = []
        try:
            chosen = choose(name, kwargs, budget, asked)
            results[rank] = ("ok", chosen.tolist(), asked)
        except RankFailedError as err:
            results[rank] = ("failed", str(err), asked)
    finally:
        dist.destroy_process_group()


def _fail(self, outputs, budget, generator):
    raise MemoryError("out of memory in this partition (injected)")


def run_ranks(name, kwargs, budget, world=2, fail_rank=-1):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_rank_main, args=(world, port, name, kwargs, budget, results, fail_rank), nprocs=world)
    return [results[r] for r in range(world)]


@pytest.mark.distributed
@pytest.mark.timeout(180)  # two gloo processes: a hang fails in minutes
@pytest.mark.parametrize("name, kwargs", STRATEGIES)
def test_two_ranks_take_different_partitions_and_pick_what_one_process_picks(name, kwargs):
    one = choose(name, kwargs, 23, [])
    (status0, picks0, asked0), (status1, picks1, asked1) = run_ranks(name, kwargs, 23)
    assert status0 == status1 == "ok"
    assert picks0 == picks1 == one.tolist()
    # Rank 0 scored partitions 0, 2, 4 and rank 1 partitions 1, 3: disjoint, together all of them.
    parts = plain_partitions(N, LABELED, 5, seed=3)
    expected = [[[LABELED + p for p in parts[i][0]], parts[i][1]] for i in range(5)]
    assert asked0 == [loader for i in (0, 2, 4) for loader in expected[i]]
    assert asked1 == [loader for i in (1, 3) for loader in expected[i]]


@pytest.mark.distributed
@pytest.mark.timeout(180)  # two gloo processes: a hang fails in minutes
def test_a_rank_failing_in_its_partitions_fails_every_rank_with_its_number_and_cause():
    results = run_ranks("partitioned_coreset", {"partitions": 5}, 23, fail_rank=1)
    for status, message, _ in results:
        assert status == "failed"
        assert "selecting in this rank's partitions failed on 1 of 2 ranks" in message
        assert "rank 1: MemoryError: out of memory in this partition (injected)" in message

"""The engine inside ``sharing_work`` on two gloo ranks: each rank its shard of rows, the same results (and the
same picks of the strategies built on it) as one process."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from al_lightning.strategies import PoolOutputs, build
from al_lightning.strategies.neighbours import (
    kmeans,
    nearest_neighbours,
    nearest_other_label_sq,
    on_one_grid,
    radius_edges,
    sharing_work,
)

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(180)]  # two gloo processes: a hang fails in minutes


def everything():
    """Every engine result on one fixed set of points (N = 101: the shards are 50 and 51 rows)."""
    points = torch.randn(101, 5, generator=torch.Generator().manual_seed(0))
    (grid,) = on_one_grid(points)
    values, positions = nearest_neighbours(grid, k=7)
    edges = radius_edges(grid, grid.to_grid_sq(2.0))
    labels = torch.arange(101) % 4
    clusters = kmeans(grid, 6, torch.Generator().manual_seed(1))
    head = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    outputs = PoolOutputs(
        index=torch.arange(200, 301),
        features=points,
        weight=head,
        bias=torch.zeros(4),
        labeled_features=points[:3] + 0.5,
    )
    shared_strategies = [
        build("kmeans", seed=2),
        build("typiclust", seed=2),
        build("dropquery", seed=2, candidate_factor=0),
        build("probcover", seed=2),
        build("maxherding", gamma=2.0),
        build("maxherding", gamma=2.0, max_dense=0, neighbours=9),
    ]
    return {
        "picks": [strategy.select(outputs, 12) for strategy in shared_strategies],
        "knn": (values, positions),
        "edges": edges,
        "other": nearest_other_label_sq(grid, labels),
        "kmeans": (clusters.assignment, clusters.sq_distance, clusters.centres.q, clusters.iterations),
    }


def _rank_main(rank, world, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        with sharing_work() as split:
            assert split.shard(101).numel() == (50 if rank == 0 else 51)
            results[rank] = everything()
    finally:
        dist.destroy_process_group()


def test_two_ranks_sharing_the_work_compute_what_one_process_computes():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_rank_main, args=(2, port, results), nprocs=2)
    alone = everything()
    for rank in (0, 1):
        shared = results[rank]
        assert torch.equal(shared["knn"][0], alone["knn"][0]) and torch.equal(shared["knn"][1], alone["knn"][1])
        assert torch.equal(shared["edges"], alone["edges"])
        assert torch.equal(shared["other"], alone["other"])
        for got, expected in zip(shared["kmeans"][:3], alone["kmeans"][:3]):
            assert torch.equal(got, expected)
        assert shared["kmeans"][3] == alone["kmeans"][3]
        for got, expected in zip(shared["picks"], alone["picks"]):
            assert got.tolist() == expected.tolist()

"""The pool's invariants: one mutator, no label lost or overwritten, the holdout never labeled."""

import pytest
import torch

from al_lightning.data import ActivePool
from al_lightning.run_files import write_pool


def test_label_records_round_and_label():
    pool = ActivePool(10, holdout=[0, 1])
    pool.label([4, 2], [1, 0], round=0)
    pool.label([7], [2], round=1)
    assert pool.labeled_indices().tolist() == [2, 4, 7]
    assert pool.unlabeled_indices().tolist() == [3, 5, 6, 8, 9]
    assert pool.num_labeled == 3 and pool.num_unlabeled == 5
    assert pool.last_round == 1
    assert pool.class_counts(3).tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    "indices, message",
    [([3, 3], "repeats"), ([1], "held-out"), ([2], "already labeled"), ([10], r"\[0, 10\)")],
)
def test_label_refuses_what_would_lose_or_corrupt_labels(indices, message):
    pool = ActivePool(10, holdout=[1])
    pool.label([2], [0], round=0)
    before = pool.state_dict()
    with pytest.raises(ValueError, match=message):
        pool.label(indices, [0] * len(indices), round=1)
    after = pool.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in ("rounds", "labels", "holdout"))


def test_state_dict_round_trip_and_size_check():
    pool = ActivePool(6, holdout=[5])
    pool.label([0, 3], [1, 1], round=0)
    copy = ActivePool(6)
    copy.load_state_dict(pool.state_dict())
    assert copy.labeled_indices().tolist() == [0, 3] and copy.holdout_indices().tolist() == [5]
    with pytest.raises(ValueError, match="6 training indices but this dataset has 7"):
        ActivePool(7).load_state_dict(pool.state_dict())


def test_csv_lists_labeled_indices_in_labeling_order(tmp_path):
    pool = ActivePool(8)
    pool.label([5, 1], [0, 0], round=0)
    pool.label([0], [1], round=1)
    write_pool(tmp_path, pool.to_csv())
    assert (tmp_path / "pool.csv").read_text() == "index,round\n1,0\n5,0\n0,1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pool.csv"]  # no temporary file left behind


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    pool = ActivePool(4)
    pool.label([1], [0], round=0)
    path = tmp_path / "pool.csv"
    write_pool(tmp_path, pool.to_csv())
    pool.label([2], [0], round=1)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr("al_lightning.io.os.replace", crash)
    with pytest.raises(OSError):
        write_pool(tmp_path, pool.to_csv())
    assert path.read_text() == "index,round\n1,0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pool.csv"]

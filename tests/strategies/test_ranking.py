"""Sort keys order exactly like (score, id), for every float."""

import torch

from al_lightning.strategies.ranking import key_ids, key_scores, score_keys, smallest_k


def test_keys_order_like_scores_then_ids():
    scores = torch.tensor([3.0, -1.5, float("inf"), -0.0, 0.0, -float("inf"), 1e-30, -2.0, 3.0, -1.5])
    ids = torch.arange(scores.numel())
    keys = score_keys(scores, ids)
    expected = sorted(range(scores.numel()), key=lambda i: (scores[i].item(), 0 if str(scores[i].item()) == "-0.0" else 1, i))
    assert torch.argsort(keys).tolist() == expected


def test_keys_round_trip():
    scores = torch.randn(100) * 1e3
    ids = torch.randint(0, 2**32 - 1, (100,))
    keys = score_keys(scores, ids)
    assert torch.equal(key_ids(keys), ids)
    assert torch.equal(key_scores(keys), scores)


def test_smallest_k_breaks_ties_by_position():
    scores = torch.tensor([2.0, 1.0, 1.0, 0.5, 1.0])
    assert smallest_k(scores, 3).tolist() == [3, 1, 2]

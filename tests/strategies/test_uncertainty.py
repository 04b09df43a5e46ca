"""Margin, confidence and entropy against direct computations."""

import numpy as np
import torch

from al_lightning.strategies import PoolOutputs, build


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def outputs(seed=0, n=200, c=7):
    g = torch.Generator().manual_seed(seed)
    return PoolOutputs(index=torch.arange(n) * 3, logits=torch.randn(n, c, generator=g) * 2)


def test_margin_matches_direct_computation():
    out = outputs()
    p = np.sort(softmax(out.logits.double().numpy()), axis=1)
    expected = np.argsort(p[:, -1] - p[:, -2], kind="stable")[:15] * 3
    assert build("margin").select(out, 15).tolist() == expected.tolist()


def test_confidence_matches_direct_computation():
    out = outputs(1)
    p = softmax(out.logits.double().numpy())
    expected = np.argsort(p.max(axis=1), kind="stable")[:15] * 3
    assert build("confidence").select(out, 15).tolist() == expected.tolist()


def test_entropy_matches_direct_computation():
    out = outputs(2)
    p = softmax(out.logits.double().numpy())
    entropy = -(p * np.log(p)).sum(axis=1)
    expected = np.argsort(-entropy, kind="stable")[:15] * 3
    assert build("entropy").select(out, 15).tolist() == expected.tolist()


def test_margin_on_a_hand_checked_case():
    # softmax rows: [.5,.5] margin 0; [.73,.27] margin .46; [.88,.12] margin .76
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    assert build("margin").select(PoolOutputs(index=torch.tensor([10, 11, 12]), logits=logits), 2).tolist() == [11, 12]

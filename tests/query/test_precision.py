"""Selection does not depend on the training precision: the head and every score stay float32."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from pytorch_lightning.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader, TensorDataset

from al_lightning.inference import InferenceLoop
from al_lightning.models import ActiveClassifier
from al_lightning.query.scoring import PoolScorer
from al_lightning.query.selection import select_from_pool
from al_lightning.strategies import build


@pytest.fixture(scope="module")
def pool():
    """N = 4,000 embeddings, C = 1,000 classes, d = 256, top logits near 10 (as a trained ImageNet head)."""
    generator = torch.Generator().manual_seed(0)
    n, c, d = 4000, 1000, 256
    model = ActiveClassifier(num_classes=c, backbone="identity", input_dim=d)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(c, d, generator=generator) * 0.2)
        model.head.bias.copy_(torch.randn(c, generator=generator) * 0.1)
    features = torch.randn(n, d, generator=generator)
    loader = DataLoader(TensorDataset(features, torch.arange(n)), batch_size=512)
    return model, loader, features


def choose(model, loader, strategy: str, forward_context) -> torch.Tensor:
    scorer = PoolScorer(InferenceLoop(model, torch.device("cpu"), forward_context))
    n = len(loader.dataset)
    labels = torch.full((n,), -1)
    return select_from_pool(build(strategy), 200, scorer, loader, torch.arange(n), loader, labels, labels)


def test_the_pool_is_at_a_realistic_logit_scale(pool):
    model, _, features = pool
    with torch.no_grad():
        top = model(features).max(dim=1).values
    assert 5.0 < float(top.median()) < 15.0


@pytest.mark.parametrize("strategy", ["base", "mase", "margin", "entropy"])
def test_bf16_mixed_scoring_selects_what_float32_scoring_selects(pool, strategy):
    model, loader, _ = pool
    bf16 = MixedPrecision("bf16-mixed", "cpu")
    in_float32 = choose(model, loader, strategy, nullcontext)
    in_bf16 = choose(model, loader, strategy, bf16.forward_context)
    assert torch.equal(in_bf16, in_float32)


def test_logits_are_float32_inside_autocast(pool):
    model, _, features = pool
    with MixedPrecision("bf16-mixed", "cpu").forward_context():
        logits = model(features[:8])
        reference = torch.nn.functional.linear(features[:8], model.head.weight, model.head.bias)
    assert logits.dtype == torch.float32
    assert reference.dtype == torch.bfloat16  # what the head computed before it left autocast

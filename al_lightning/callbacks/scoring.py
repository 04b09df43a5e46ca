"""Running the model over the pool (and the labeled set) to build a strategy's ``PoolOutputs``."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from al_lightning.distributed import gather_rows
from al_lightning.models.classifier import ActiveClassifier
from al_lightning.strategies import PoolOutputs


@torch.no_grad()
def embed(
    module: ActiveClassifier,
    loader: DataLoader,
    want_logits: bool,
    want_features: bool,
    device: torch.device,
    forward_context: Callable[[], AbstractContextManager] = nullcontext,
) -> dict[str, Tensor]:
    """Eval-mode pass over ``loader`` (yielding ``(image, pool_index)``) on this rank.

    Returns the float32 ``logits`` and/or ``features`` asked for, with ``index``, on the CPU.
    ``forward_context`` makes the context each forward runs in (the precision plugin's autocast).
    """
    was_training = module.training
    module.eval()
    chunks: dict[str, list[Tensor]] = {"index": [], "logits": [], "features": []}
    try:
        for images, index in loader:
            with forward_context():
                features = module.extract_features(images.to(device, non_blocking=True))
                logits = module.head(features) if want_logits else None
            chunks["index"].append(index.cpu())
            if want_logits:
                chunks["logits"].append(logits.float().cpu())
            if want_features:
                chunks["features"].append(features.float().cpu())
    finally:
        module.train(was_training)
    empty = {"index": (0,), "logits": (0, module.head.out_features), "features": (0, module.feature_dim)}
    wanted = {"index": True, "logits": want_logits, "features": want_features}
    return {
        k: torch.cat(v) if v else torch.empty(empty[k], dtype=torch.long if k == "index" else torch.float32)
        for k, v in chunks.items()
        if wanted[k]
    }


def gather_outputs(local: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Every rank's rows of every field, concatenated and sorted by pool index.

    Sorting makes the result independent of how the pool was sharded, so a 1-rank and a
    2-rank run hand the strategy identical inputs.
    """
    gathered = {k: gather_rows(v, device) for k, v in local.items()}
    order = torch.argsort(gathered["index"])
    return {k: v[order] for k, v in gathered.items()}


def pool_outputs(
    fields: Iterable[str],
    module: ActiveClassifier,
    pool_indices: Tensor,
    pool_loader: DataLoader,
    labeled_loader: Optional[DataLoader],
    labeled_targets: Optional[Tensor],
    true_targets: Tensor,
    device: torch.device,
    forward_context: Callable[[], AbstractContextManager] = nullcontext,
) -> PoolOutputs:
    """Build the :class:`PoolOutputs` that carry ``fields`` (a strategy's ``requires``), and no more.

    Args:
        fields: PoolOutputs field names the strategy needs.
        module: the classifier, with the weights to score with.
        pool_indices: all unlabeled pool indices (the index when no forward pass is needed).
        pool_loader: the unlabeled pool, yielding ``(image, pool_index)``, this rank's shard.
        labeled_loader: the labeled set in the same form (read only if labeled features are needed).
        labeled_targets: (N_train,) oracle labels indexed by pool index (for ``labeled_targets``).
        true_targets: (N_train,) dataset labels (only for the cheating ``targets`` field).
        device: the rank's device.
    """
    fields = set(fields)
    need_logits = "logits" in fields
    need_features = "features" in fields
    if need_logits or need_features:
        scored = embed(module, pool_loader, need_logits, need_features, device, forward_context)
        scored = gather_outputs(scored, device)
    else:
        scored = {"index": pool_indices}
    outputs = PoolOutputs(index=scored["index"], logits=scored.get("logits"), features=scored.get("features"))
    if fields & {"weight", "bias"}:
        outputs.weight = module.head.weight.detach().float().cpu()
        outputs.bias = module.head.bias.detach().float().cpu()
    if "labeled_features" in fields and labeled_loader is not None:
        labeled = gather_outputs(embed(module, labeled_loader, False, True, device, forward_context), device)
        outputs.labeled_features = labeled["features"]
        outputs.labeled_targets = labeled_targets[labeled["index"]]
    elif "labeled_targets" in fields:
        outputs.labeled_targets = labeled_targets[labeled_targets >= 0]
    if "targets" in fields:
        outputs.targets = true_targets[outputs.index]
    return outputs

"""Running the model over the pool to feed a strategy: streamed batch by batch, or gathered whole."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Iterable, Iterator, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.utilities.distributed import gather_all_tensors
from tqdm.auto import tqdm

from al_lightning.distributed import is_distributed, rank
from al_lightning.errors import ConfigurationError
from al_lightning.models.classifier import ActiveClassifier
from al_lightning.strategies import PoolOutputs, Strategy
from al_lightning.strategies.outputs import PER_POINT_FIELDS
from al_lightning.strategies.reducers import Reducer
from al_lightning.strategies.strategy import StreamingStrategy

ForwardContext = Callable[[], AbstractContextManager]

#: Per-point fields a forward pass over the pool produces (``targets`` come from the oracle's data).
SCORED_FIELDS = tuple(f for f in PER_POINT_FIELDS if f != "targets")


def gather_rows(tensor: Tensor, device: torch.device) -> Tensor:
    """Every rank's rows of ``tensor`` (any number per rank), in rank order, on the tensor's device.

    The collective runs on ``device`` (the rank's GPU under NCCL); a no-op in one process.
    """
    if not is_distributed():
        return tensor
    return torch.cat(gather_all_tensors(tensor.to(device))).to(tensor.device)


class PoolScorer:
    """Eval-mode passes of the classifier over this rank's shard of a loader.

    The trunk runs inside ``forward_context`` (the precision plugin's autocast); the head,
    the logits and the features handed to strategies are float32
    (:meth:`ActiveClassifier.classify`), so selection does not depend on the training precision.

    Args:
        module: the classifier, with the weights to score with.
        device: the rank's device.
        forward_context: makes the context each forward runs in.
        progress: a label for a progress bar over the batches (on this rank), or None for none.
    """

    def __init__(
        self,
        module: ActiveClassifier,
        device: torch.device,
        forward_context: ForwardContext = nullcontext,
        progress: Optional[str] = None,
    ) -> None:
        self.module = module
        self.device = device
        self.forward_context = forward_context
        self.progress = progress

    def head(self) -> PoolOutputs:
        """The head and C as a :class:`PoolOutputs` with no points: the fields shared by every chunk."""
        return PoolOutputs(
            index=torch.empty(0, dtype=torch.long),
            weight=self.module.head.weight.detach().float(),
            bias=self.module.head.bias.detach().float(),
            num_classes=self.module.head.out_features,
        )

    @torch.no_grad()
    def batches(self, loader: DataLoader, fields: Iterable[str]) -> Iterator[PoolOutputs]:
        """Per-batch outputs with the per-point ``fields`` asked for and the head's fields."""
        fields = set(fields)
        head = self.head()
        was_training = self.module.training
        self.module.eval()
        try:
            for batch in tqdm(loader, desc=self.progress, disable=self.progress is None, leave=False):
                if batch is None:  # every image unreadable and skipped: nothing to score
                    continue
                images, index = batch
                images = images.to(self.device, non_blocking=True)
                values: dict[str, Tensor] = {}
                if fields & {"logits", "features"}:
                    with self.forward_context():
                        features = self.module.extract_features(images)
                        if "logits" in fields:
                            values["logits"] = self.module.classify(features)
                    if "features" in fields:
                        values["features"] = features.float()
                if "images" in fields:
                    values["images"] = images
                yield PoolOutputs(index=index.to(self.device), weight=head.weight, bias=head.bias, num_classes=head.num_classes, **values)
        finally:
            self.module.train(was_training)

    def gather(self, loader: DataLoader, fields: Iterable[str]) -> dict[str, Tensor]:
        """All ranks' rows of ``fields`` (and ``index``), on the CPU, sorted by pool index.

        Sorting makes the result independent of how the pool was sharded, so a 1-rank and a
        2-rank run hand the strategy identical inputs.
        """
        fields = [f for f in SCORED_FIELDS if f in set(fields)]
        columns: dict[str, list[Tensor]] = {f: [] for f in ["index", *fields]}
        for chunk in self.batches(loader, fields):
            for f in columns:
                columns[f].append(getattr(chunk, f).cpu())
        local = {f: torch.cat(v) if v else self._empty(f) for f, v in columns.items()}
        gathered = {f: gather_rows(v, self.device) for f, v in local.items()}
        order = torch.argsort(gathered["index"])
        return {f: v[order] for f, v in gathered.items()}

    def stream(self, reducer: Reducer, loader: DataLoader, fields: Iterable[str]) -> None:
        """Feed this rank's batches to ``reducer``, then merge every other rank's state into it."""
        for chunk in self.batches(loader, fields):
            reducer.update(chunk)
        states = gather_rows(reducer.state().unsqueeze(0), self.device)
        for r, state in enumerate(states):
            if r != rank():
                reducer.merge_state(state)

    def _empty(self, field: str) -> Tensor:
        """A 0-row tensor of the right trailing shape, for a rank whose shard is empty."""
        width = {"logits": self.module.head.out_features, "features": self.module.feature_dim}
        if field == "index":
            return torch.empty(0, dtype=torch.long)
        if field == "images":
            raise ValueError("an empty shard cannot describe its image shape; use a streaming strategy")
        return torch.empty(0, width[field])


def select_from_pool(
    strategy: Strategy,
    budget: int,
    scorer: PoolScorer,
    pool_loader: DataLoader,
    pool_indices: Tensor,
    labeled_loader: DataLoader,
    labels: Tensor,
    true_targets: Optional[Tensor],
) -> Tensor:
    """Pool indices chosen by ``strategy``: on every rank for streaming strategies, on rank 0 otherwise.

    Every chunk or whole :class:`PoolOutputs` a strategy gets carries the head (``weight``,
    ``bias``) and ``num_classes``, plus the fields it ``requires`` and those it ``accepts``
    that the caller can give (``targets`` when ``true_targets`` is given). Streaming strategies
    reduce batch by batch (memory O(b) or O(C·b)) and every rank finishes the merged
    reduction identically; the others get whole outputs gathered on every rank, and rank 0
    selects (other ranks return nothing: the caller broadcasts rank 0's answer).

    Args:
        pool_loader: this rank's shard of the pool to score, yielding ``(image, pool_index)``.
        pool_indices: all pool indices to choose from (used as is when no forward pass is needed).
        labeled_loader: this rank's shard of the labeled set, same form.
        labels: (N_train,) labels by training index (-1 where unknown).
        true_targets: (N_train,) the dataset's labels, for the ``targets`` field: an oracle
            that answers at once (the simulated one) gives them; None means the oracle cannot
            answer during the query (a human annotator). A strategy that requires ``targets``
            (the cheating ``balanced_random``) then cannot run; one that accepts them
            (``balancing``'s per-pick label feedback) does without.
    """
    if "targets" in strategy.requires and true_targets is None:
        raise ConfigurationError(
            f"strategy '{strategy.name or type(strategy).__name__}' reads the pool's true labels (PoolOutputs.targets) "
            "during the query, so it needs an oracle that answers at once (the simulated oracle); "
            "none was given (true_targets=None: an oracle, such as a human annotator, that cannot answer "
            "during the query)"
        )
    fields = set(strategy.requires)
    if "targets" in strategy.accepts and true_targets is not None:
        fields.add("targets")
    per_point = fields & set(SCORED_FIELDS)
    if isinstance(strategy, StreamingStrategy):
        reducer = strategy.reducer(scorer.head(), budget)
        scorer.stream(reducer, pool_loader, per_point)

        def rescan(fresh: Reducer) -> None:
            scorer.stream(fresh, pool_loader, per_point)

        return reducer.finish(rescan).cpu()

    head = scorer.head()
    scored = scorer.gather(pool_loader, per_point) if per_point else {"index": pool_indices}
    outputs = PoolOutputs(**scored, weight=head.weight.cpu(), bias=head.bias.cpu(), num_classes=head.num_classes)
    if "labeled_features" in fields:
        labeled = scorer.gather(labeled_loader, ["features"])
        outputs.labeled_features = labeled["features"]
        outputs.labeled_targets = labels[labeled["index"]]
    else:
        outputs.labeled_targets = labels[labels >= 0]
    if "targets" in fields:
        outputs.targets = true_targets[outputs.index]
    return strategy.select(outputs, budget) if rank() == 0 else torch.empty(0, dtype=torch.long)

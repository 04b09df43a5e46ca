"""Running the model over the pool to feed a strategy: streamed batch by batch, or gathered whole."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Iterable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.utilities.distributed import gather_all_tensors
from tqdm.auto import tqdm

from al_lightning.distributed import is_distributed, on_every_rank, rank
from al_lightning.models.classifier import ActiveClassifier
from al_lightning.strategies import PoolOutputs
from al_lightning.strategies.outputs import PER_POINT_FIELDS
from al_lightning.strategies.reducers import Reducer

ForwardContext = Callable[[], AbstractContextManager]

#: Per-point fields a forward pass over the pool produces (``targets`` come from the oracle's data).
SCORED_FIELDS = tuple(f for f in PER_POINT_FIELDS if f != "targets")


def gather_rows(tensor: Tensor, device: torch.device, to: Optional[int] = None) -> Optional[Tensor]:
    """Every rank's rows of ``tensor`` (any number per rank), in rank order, on the tensor's device.

    ``to``: only that rank receives them (the others get None), so the gathered whole exists
    once, not on every rank. The collectives run on ``device`` (the rank's GPU under NCCL);
    a no-op in one process.
    """
    if not is_distributed():
        return tensor
    if to is None:
        return torch.cat(gather_all_tensors(tensor.to(device))).to(tensor.device)
    local = tensor.to(device)
    sizes = [int(s) for s in gather_all_tensors(torch.tensor([local.shape[0]], device=device))]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local
    received = [torch.empty_like(padded) for _ in sizes] if rank() == to else None
    dist.gather(padded, received, dst=to)
    if received is None:
        return None
    return torch.cat([rows[:size] for rows, size in zip(received, sizes)]).to(tensor.device)


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

    def collect(self, loader: DataLoader, fields: Iterable[str]) -> dict[str, Tensor]:
        """This rank's rows of ``fields`` (and ``index``) from ``loader``, on the CPU, in the loader's order.

        Local work only (no collective), so it can run inside :func:`on_every_rank`.
        """
        fields = [f for f in SCORED_FIELDS if f in set(fields)]
        columns: dict[str, list[Tensor]] = {f: [] for f in ["index", *fields]}
        for chunk in self.batches(loader, fields):
            for f in columns:
                columns[f].append(getattr(chunk, f).cpu())
        return {f: torch.cat(v) if v else self._empty(f) for f, v in columns.items()}

    def gather(self, loader: DataLoader, fields: Iterable[str], to: Optional[int] = None) -> Optional[dict[str, Tensor]]:
        """All ranks' rows of ``fields`` (and ``index``), on the CPU, sorted by pool index.

        Sorting makes the result independent of how the pool was sharded, so a 1-rank and a
        2-rank run hand the strategy identical inputs. ``to``: only that rank gets them (the
        others get None).
        """
        local = on_every_rank(lambda: self.collect(loader, fields), "scoring the pool")
        gathered = {f: gather_rows(v, self.device, to) for f, v in local.items()}
        if gathered["index"] is None:
            return None
        order = torch.argsort(gathered["index"])
        return {f: v[order] for f, v in gathered.items()}

    def stream(self, reducer: Reducer, loader: DataLoader, fields: Iterable[str]) -> None:
        """Feed this rank's batches to ``reducer``, then merge every other rank's state into it."""

        def update() -> None:
            for chunk in self.batches(loader, fields):
                reducer.update(chunk)

        on_every_rank(update, "scoring the pool")
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

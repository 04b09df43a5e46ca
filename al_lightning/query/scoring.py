"""Running the model over the pool to feed a strategy: streamed batch by batch, or gathered whole."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from al_lightning.distributed import gather_rows, on_every_rank, rank
from al_lightning.inference import InferenceLoop
from al_lightning.models.classifier import ActiveClassifier
from al_lightning.strategies import PoolOutputs
from al_lightning.strategies.outputs import PER_POINT_FIELDS
from al_lightning.strategies.reducers import Reducer

#: Per-point fields a forward pass over the pool produces (``targets`` come from the oracle).
SCORED_FIELDS = tuple(f for f in PER_POINT_FIELDS if f != "targets")


class PoolScorer:
    """The classifier's outputs on this rank's shard of a pool loader, as :class:`PoolOutputs`.

    Passes go through ``loop`` (eval mode, device, precision, progress, failures), over the
    classifier it holds, with the weights to score with. The trunk runs in the trainer's
    precision; the head, the logits and the features handed to strategies are float32
    (:meth:`ActiveClassifier.classify`), so selection does not depend on the training precision.
    """

    def __init__(self, loop: InferenceLoop) -> None:
        if not isinstance(loop.module, ActiveClassifier):
            raise TypeError(f"PoolScorer scores with an ActiveClassifier, got {type(loop.module).__name__}")
        self.loop = loop
        self.module: ActiveClassifier = loop.module
        self.device = loop.device

    def head(self) -> PoolOutputs:
        """The head and C as a :class:`PoolOutputs` with no points: the fields shared by every chunk."""
        return PoolOutputs(
            index=torch.empty(0, dtype=torch.long),
            weight=self.module.head.weight.detach().float(),
            bias=self.module.head.bias.detach().float(),
            num_classes=self.module.head.out_features,
        )

    def _forward(self, fields: Iterable[str]) -> Callable[[Tensor], dict[str, Tensor]]:
        """The per-point ``fields`` of a batch of inputs."""
        fields = set(fields)

        def forward(inputs: Tensor) -> dict[str, Tensor]:
            values: dict[str, Tensor] = {}
            if fields & {"logits", "features"}:
                features = self.module.extract_features(inputs)
                if "logits" in fields:
                    values["logits"] = self.module.classify(features)
                if "features" in fields:
                    values["features"] = features.float()
            if "images" in fields:
                values["images"] = inputs
            return values

        return forward

    def _chunks(self, loader: DataLoader, fields: Iterable[str], consume: Callable[[PoolOutputs], None], checked: bool) -> None:
        """Each batch as a :class:`PoolOutputs` (the head's fields and ``fields``) to ``consume``."""
        head = self.head()

        def to_outputs(values: dict[str, Tensor], index: Tensor) -> None:
            consume(PoolOutputs(index=index.to(self.device), weight=head.weight, bias=head.bias, num_classes=head.num_classes, **values))

        if checked:
            self.loop.run(loader, self._forward(fields), to_outputs, "scoring the pool")
        else:
            self.loop.local(loader, self._forward(fields), to_outputs)

    def collect(self, loader: DataLoader, fields: Iterable[str]) -> dict[str, Tensor]:
        """This rank's rows of ``fields`` (and ``index``) from ``loader``, on the CPU, in the loader's order.

        Local work only (no collective), for work that is checked on every rank as a whole.
        """
        fields = [f for f in SCORED_FIELDS if f in set(fields)]
        columns: dict[str, list[Tensor]] = {f: [] for f in ["index", *fields]}

        def keep(chunk: PoolOutputs) -> None:
            for f in columns:
                columns[f].append(getattr(chunk, f).cpu())

        self._chunks(loader, fields, keep, checked=False)
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
        self._chunks(loader, fields, reducer.update, checked=True)
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

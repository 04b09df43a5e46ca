"""The one loop over a loader in inference: test evaluation, pool scoring, feature extraction.

Every pass of the model over data that is not training goes through :class:`InferenceLoop`, so
what such a pass needs lives here once: eval mode (restored afterwards), no gradients, inputs
moved to the rank's device (asynchronously: the data module pins host memory when a GPU is
there), the trainer's precision, a progress bar where the trainer shows one, batches left out
whose every image was unreadable, and what happens when a rank fails. Sharding is the loader's:
the data module gives each rank its share of the items without repeats
(:class:`~al_lightning.data.samplers.ShardSampler`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Optional, TypeVar

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from al_lightning.distributed import on_every_rank

T = TypeVar("T")
#: Makes the context every forward pass runs in (the precision plugin's autocast, or nothing).
ForwardContext = Callable[[], AbstractContextManager]


class InferenceLoop:
    """Batches of one rank's loader through a function of the model, in eval mode, without gradients.

    Loaders yield ``(inputs, extra)`` (``extra``: targets or pool indices, left on the CPU) or
    ``None`` for a batch whose every item was unreadable. ``forward`` runs inside
    ``forward_context`` (autocast under ``bf16-mixed``; the classifier's head leaves it and stays
    float32, so scores that rank the pool do not depend on the training precision).

    Args:
        module: the model; in eval mode during the pass, its own mode afterwards.
        device: where inputs go (the rank's device).
        forward_context: the precision plugin's ``forward_context``, or nothing.
        progress: a progress bar's label, or None for no bar.
    """

    def __init__(
        self,
        module: nn.Module,
        device: torch.device,
        forward_context: ForwardContext = nullcontext,
        progress: Optional[str] = None,
    ) -> None:
        self.module = module
        self.device = device
        self.forward_context = forward_context
        self.progress = progress

    @classmethod
    def of(cls, trainer: pl.Trainer, module: nn.Module, progress: Optional[str] = None) -> "InferenceLoop":
        """The loop as ``trainer`` runs ``module``: its device and precision; the bar only on global
        rank 0 and only when the trainer shows its own."""
        shown = progress if trainer.is_global_zero and trainer.progress_bar_callback is not None else None
        return cls(module, trainer.strategy.root_device, trainer.precision_plugin.forward_context, shown)

    def local(self, loader: DataLoader, forward: Callable[[Tensor], T], consume: Callable[[T, Any], None]) -> None:
        """``consume(forward(inputs), extra)`` for every batch of ``loader``, on this rank only.

        No collective: for work that is itself part of a larger piece checked on every rank.
        """
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.no_grad():
                for batch in tqdm(loader, desc=self.progress, disable=self.progress is None, leave=False):
                    if batch is None:  # every item of the batch unreadable and skipped
                        continue
                    inputs, extra = batch
                    with self.forward_context():
                        result = forward(inputs.to(self.device, non_blocking=True))
                    consume(result, extra)
        finally:
            self.module.train(was_training)

    def run(self, loader: DataLoader, forward: Callable[[Tensor], T], consume: Callable[[T, Any], None], what: str) -> None:
        """:meth:`local` on every rank, then agreement: if it failed on any rank, every rank raises
        one :class:`~al_lightning.distributed.RankFailedError` naming the rank and the cause of ``what``."""
        on_every_rank(lambda: self.local(loader, forward, consume), what)

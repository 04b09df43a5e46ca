"""``ActiveLearningCLI``: ``python train.py fit --config X.yaml`` runs a whole experiment."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from al_lightning.callbacks import QueryCallback
from al_lightning.callbacks.run_state import latest_last_checkpoint
from al_lightning.config_files import PROJECT_CONFIGS, resolve_config_args
from al_lightning.data import ActiveDataModule
from al_lightning.distributed import RankFailedError, leave_process_group
from al_lightning.errors import ConfigurationError
from al_lightning.models import ActiveClassifier


class ActiveLearningCLI(LightningCLI):
    """LightningCLI with the query callback always registered under ``--al.*``.

    Namespaces: ``--data.*`` (:class:`ActiveDataModule`), ``--model.*``
    (:class:`ActiveClassifier`), ``--al.*`` (:class:`QueryCallback`), ``--trainer.*``.
    The number of classes (and, for a features file, the embedding size) flows from the
    data module into the model, and the per-round epoch limit into the cosine schedule's period. The trainer runs until the callback
    ends the last round (``max_epochs=-1``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", ActiveClassifier)
        kwargs.setdefault("datamodule_class", ActiveDataModule)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(QueryCallback, "al")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.input_dim", "model.input_dim", apply_on="instantiate")
        parser.link_arguments("al.max_epochs", "model.t_max")
        parser.set_defaults(
            {
                "trainer.max_epochs": -1,
                "trainer.reload_dataloaders_every_n_epochs": 1,
                "trainer.enable_checkpointing": False,
                "trainer.num_sanity_val_steps": 0,
            }
        )

    def before_fit(self) -> None:
        """Turn ``--ckpt_path=last`` (or a paused run's state) into a checkpoint, and log into its run's folder."""
        config = self.config_init["fit"] if "fit" in self.config_init else self.config_init
        given = config.get("ckpt_path")
        if given not in (None, "last"):
            return  # an explicit checkpoint: Lightning's own behaviour (a new log directory)
        callback = next((cb for cb in self.trainer.callbacks if isinstance(cb, QueryCallback)), None)
        paused = callback.run_state.checkpoint() if callback is not None and callback.run_state is not None else None
        checkpoint = paused
        if checkpoint is None and given == "last":
            root = self._logger_root()
            checkpoint = latest_last_checkpoint(root)
            if checkpoint is None:
                rank_zero_warn(f"--ckpt_path=last: no checkpoints/last.ckpt under '{root}' yet; starting a new run")
        if checkpoint is not None:
            rank_zero_info(f"[al] continuing the run saved in {checkpoint}")
            self._log_into(checkpoint.parent.parent)
        config["ckpt_path"] = None if checkpoint is None else str(checkpoint)

    def _logger_root(self) -> Path:
        """The folder holding the logger's run folders (``version_N``)."""
        logger = self.trainer.logger
        root = getattr(logger, "root_dir", None) if logger is not None else None
        return Path(root) if root else Path(self.trainer.default_root_dir)

    def _log_into(self, log_dir: Path) -> None:
        """Make the loggers write into ``log_dir`` (a resumed run keeps one folder and one set of curves)."""
        for logger in self.trainer.loggers:
            root = getattr(logger, "root_dir", None)
            if root is not None and Path(root).resolve() == log_dir.parent.resolve() and hasattr(logger, "_version"):
                logger._version = log_dir.name


def run_cli(cli_class: type[LightningCLI], args: Optional[list[str]] = None, configs: Path = PROJECT_CONFIGS) -> None:
    """Run a LightningCLI as a user's command: configuration mistakes end with one line, not a traceback.

    ``--config NAME.yaml`` that is not a file in the working directory is looked up in
    ``configs`` (the entry point's folder of project configs), see :func:`resolve_config_args`.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must not wait on a hub for weights we load from files
    # Early rounds have few labeled batches and in-memory datasets need no workers:
    # Lightning's hints about both would repeat every round.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    try:
        given = sys.argv[1:] if args is None else args
        resolved = resolve_config_args(given, configs) if isinstance(given, list) else given
        cli_class(args=args if resolved == given else resolved)
    except ConfigurationError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RankFailedError as err:
        if err.__cause__ is not None:  # this rank is one that failed: its own traceback first
            traceback.print_exception(err.__cause__)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        leave_process_group()


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of ``train.py``."""
    run_cli(ActiveLearningCLI, args)

"""``ActiveLearningCLI``: ``python train.py fit --config X.yaml`` runs a whole experiment."""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Optional

import yaml
from jsonargparse import Namespace
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from al_lightning.config_files import PROJECT_CONFIGS, check_moved_options, print_config_flags, resolve_config_args
from al_lightning.data import ActiveDataModule
from al_lightning.data.datamodule import backbone_pipeline_chosen
from al_lightning.data.sources import SOURCES
from al_lightning.data.transforms import describe_input_config, resolve_input_config
from al_lightning.distributed import RankFailedError, leave_process_group
from al_lightning.errors import ConfigurationError
from al_lightning.models import ActiveClassifier
from al_lightning.models.backbones import HUB, backbone_input_config
from al_lightning.oracles import ORACLES
from al_lightning.rounds import QueryCallback
from al_lightning.run_files import latest_last_checkpoint, read_run_json
from al_lightning.strategies.registry import STRATEGIES

#: Options that moved under their plug-in's name: the old spelling fails with one line naming the new one.
MOVED_OPTIONS = {
    **{f"data.{option}": f"data.dataset_args.{option}" for option in ("download", "imbalance_ratio", "split_dir", "skip_corrupt", "classes", "test_path", "val_path")},
    "al.labelstudio_url": "al.oracle_args.url",
    "al.labelstudio_project": "al.oracle_args.project",
    "al.oracle_args.image_url": "al.oracle_args.images",
}

#: Each plug-in kind: the key naming it, the key of its options, and its registry (``--print_config`` shows them all).
PLUGINS = (
    ("data.dataset", "data.dataset_args", SOURCES),
    ("al.strategy", "al.strategy_args", STRATEGIES),
    ("al.cold_start", "al.cold_start_args", STRATEGIES),
    ("al.handover_to", "al.handover_args", STRATEGIES),
    ("al.oracle", "al.oracle_args", ORACLES),
)

TENSORBOARD_LOGGER = "pytorch_lightning.loggers.TensorBoardLogger"


class ActiveLearningCLI(LightningCLI):
    """LightningCLI with the query callback always registered under ``--al.*``.

    Namespaces: ``--data.*`` (:class:`ActiveDataModule`), ``--model.*``
    (:class:`ActiveClassifier`), ``--al.*`` (:class:`QueryCallback`), ``--trainer.*``.
    The number of classes (and, for a features file, the embedding size) flows from the data
    module into the model, and the per-round epoch limit into the cosine schedule's period.
    The trainer runs until the callback ends the last round (``max_epochs=-1``), without
    Lightning's distributed sampler (the data module shards every loader itself, exactly).

    ``--ckpt_path=last`` (or a run paused for people's labels, found through
    ``--al.label_dir``) continues the run in its own log directory: the logger's version is
    set to that run's before the trainer is built.
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
                "trainer.use_distributed_sampler": False,
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse; with ``--print_config``, print the config with every option of the chosen plug-ins and exit.

        jsonargparse prints what was given; a plug-in's options (``--al.strategy_args``, ...)
        are a dict whose defaults live in the plug-in's constructor, so they are filled in here
        (:meth:`~al_lightning.plugins.Registry.options`) after the arguments are checked.
        """
        given = sys.argv[1:] if args is None else args
        flags = print_config_flags(given) if isinstance(given, list) else None
        if flags is None:
            super().parse_arguments(parser, args)
            return
        self.config = parser.parse_args([a for a in given if a.split("=", 1)[0] != "--print_config"])
        subcommand = self.config.get("subcommand")
        for name_key, options_key, registry in PLUGINS:
            key = f"{subcommand}.{options_key}" if subcommand else options_key
            name = self.config.get(f"{subcommand}.{name_key}" if subcommand else name_key)
            if name is not None and key in self.config:
                given_options = self.config[key] or {}
                registry.check(name, given_options)
                self.config[key] = {**registry.options(name), **given_options}
        dumped = yaml.safe_load(parser.dump(self.config, skip_none=False, skip_validation=True))
        if subcommand:
            dumped = dumped[subcommand]
        if "skip_null" in flags:
            dumped = _without_none(dumped)
        pipeline = input_pipeline_line(dumped)
        sys.stdout.write((f"# {pipeline}\n" if pipeline else "") + yaml.safe_dump(dumped, sort_keys=False))
        sys.exit(0)

    def before_instantiate_classes(self) -> None:
        """Which run ``--ckpt_path=last`` (or a paused run) continues, set before the trainer exists."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if "ckpt_path" in config:
            self._resume_in_place(config)

    def _resume_in_place(self, config: Namespace) -> None:
        """Turn ``--ckpt_path=last`` (or a paused run's state) into a checkpoint, and log into its run's folder.

        An explicit checkpoint keeps Lightning's own behaviour (a new log directory). Lightning's
        default logger is spelled out (TensorBoard in ``default_root_dir/lightning_logs``) so that
        its version can be set.
        """
        given = config.ckpt_path
        if given not in (None, "last"):
            return
        trainer = config.trainer
        if trainer.logger is None or trainer.logger is True:
            save_dir = trainer.default_root_dir or os.getcwd()
            trainer.logger = Namespace(class_path=TENSORBOARD_LOGGER, init_args=Namespace(save_dir=save_dir, name="lightning_logs"))
        loggers = [lg for lg in (trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]) if isinstance(lg, Namespace)]
        label_dir = config.al.label_dir
        checkpoint = read_run_json(Path(label_dir).expanduser()) if label_dir else None
        roots = [_logger_root(logger) for logger in loggers]
        if checkpoint is None and given == "last":
            root = next((r for r in roots if r is not None), Path(trainer.default_root_dir or "."))
            checkpoint = latest_last_checkpoint(root)
            if checkpoint is None:
                rank_zero_warn(f"--ckpt_path=last: no checkpoints/last.ckpt under '{root}' yet; starting a new run")
        config.ckpt_path = None if checkpoint is None else str(checkpoint)
        if checkpoint is None:
            return
        rank_zero_info(f"[al] continuing the run saved in {checkpoint}")
        run_dir = checkpoint.parent.parent
        for logger, root in zip(loggers, roots):
            if root is not None and root.resolve() == run_dir.parent.resolve():
                logger.init_args.version = run_dir.name


def input_pipeline_line(config: dict[str, Any]) -> Optional[str]:
    """Which input pipeline a run of ``config`` uses, in one line (``--print_config`` prints it as a comment).

    The backbone's is resolved from timm's pretrained config of ``--model.backbone`` without
    building the model; an ``hf-hub:`` name's config lives on the hub and is named only.
    """
    data, model = config.get("data") or {}, config.get("model") or {}
    if "input_pipeline" not in data or "backbone" not in model:
        return None
    backbone, mode = model["backbone"], data["input_pipeline"]
    if not backbone_pipeline_chosen(mode, model.get("pretrained") == HUB):
        return f"input pipeline (--data.input_pipeline={mode}): the source's transforms ({data.get('dataset')}, the paper's settings)"
    base = backbone_input_config(backbone)
    if base is None:
        return f"input pipeline (--data.input_pipeline={mode}): the backbone's ({backbone}), resolved from its pretrained config at set-up"
    overrides = {key: data.get(key) for key in ("image_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")}
    return f"input pipeline (--data.input_pipeline={mode}): the backbone's ({backbone}, timm): {describe_input_config(resolve_input_config(base, overrides))}"


def _logger_root(logger: Namespace) -> Optional[Path]:
    """The folder holding a file logger's run folders (``save_dir/name``), None for other loggers."""
    args = logger.get("init_args") or Namespace()
    if args.get("save_dir") is None or not any(logger.class_path.endswith(n) for n in ("TensorBoardLogger", "CSVLogger")):
        return None
    name = args.get("name", "lightning_logs")
    return Path(args.save_dir).expanduser() / name if name else Path(args.save_dir).expanduser()


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


def run_cli(cli_class: type[LightningCLI], args: Optional[list[str]] = None, configs: Path = PROJECT_CONFIGS) -> None:
    """Run a LightningCLI as a user's command: configuration mistakes end with one line, not a traceback.

    ``--config NAME.yaml`` that is not a file in the working directory is looked up in
    ``configs`` (the entry point's folder of project configs), see :func:`resolve_config_args`.
    """
    # Early rounds have few labeled batches and in-memory datasets need no workers:
    # Lightning's hints about both would repeat every round.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    try:
        given = sys.argv[1:] if args is None else args
        resolved = resolve_config_args(given, configs) if isinstance(given, list) else given
        if isinstance(resolved, list):
            check_moved_options(resolved, MOVED_OPTIONS)
        if args is None:
            sys.argv[1:] = resolved  # the command line as LightningCLI reads it, with the configs found
            cli_class()
        else:
            cli_class(args=resolved)
    except ConfigurationError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RankFailedError as err:
        if err.__cause__ is not None:  # this rank is one that failed: its own traceback first
            traceback.print_exception(err.__cause__)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except SIGTERMException:
        # Lightning stops at the next step on SIGTERM (a scheduler's cancel, preemption or time
        # limit) by raising SystemExit with no code, i.e. exit status 0: a sweep or a job script
        # would take the run for finished. 143 is a shell's status for a process ended by SIGTERM.
        print("error: stopped by SIGTERM before the experiment ended; the same command with --ckpt_path=last resumes it", file=sys.stderr)
        sys.exit(143)
    finally:
        leave_process_group()


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of ``train.py``."""
    run_cli(ActiveLearningCLI, args)

"""The command line: LightningCLI over GlimpseModel and GlimpseData, then fit and test."""

import sys
from pathlib import Path
from typing import Literal, Optional

import yaml
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI

from glimpse.callbacks import AttentionPictures, EpochSeed, RunCheckpoint
from glimpse.checkpoints import (AtomicCheckpointIO, CheckpointError, newest_intact, other_kinds_defaults, read_checkpoint,
                                 run_folder)
from glimpse.checks import ConfigError, require, require_writable_folder
from glimpse.data import GlimpseData, MnistUnavailableError
from glimpse.models import KINDS
from glimpse.module import GlimpseModel

RUNS = "runs"  # the default folder of runs


class GlimpseCLI(LightningCLI):
    """``--attention`` is a shorthand for ``--model.attention``; the image size comes from the data."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--attention", type=Optional[Literal[tuple(KINDS)]], default=None,
                            help=f"{', '.join(KINDS)} attention; when given, overrides model.attention")
        parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                            help="resume training from this checkpoint ('last' for the run's last one)")
        parser.link_arguments("data.image_size", "model.image_size", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.classes", apply_on="instantiate")
        parser.link_arguments("data.channels", "model.channels", apply_on="instantiate")
        # Two checkpoint callbacks: the best by validation error, and last.ckpt after every epoch.
        # Lightning 2.6's save_last writes only beside a new best, which would resume a killed run
        # from its best epoch, however long ago that was. The best one is added first, so it is
        # ``trainer.checkpoint_callback`` (the one ``test(ckpt_path="best")`` uses).
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(RunCheckpoint, "last")
        parser.add_lightning_class_args(AttentionPictures, "pictures")
        parser.set_defaults({
            "checkpoint.monitor": "val/error",
            "checkpoint.mode": "min",
            "checkpoint.save_last": False,
            "checkpoint.filename": "best-epoch{epoch:03d}",
            "checkpoint.auto_insert_metric_name": False,
            "last.monitor": None,
            "last.save_top_k": 1,
            "last.filename": "last",
            "last.enable_version_counter": False,
        })

    def before_instantiate_classes(self) -> None:
        config = self.config
        require(not config.checkpoint.save_last, "checkpoint.save_last", config.checkpoint.save_last,
                "false: last.ckpt is written after every epoch by the 'last' checkpoint (its settings are --last.*)")
        if config.attention is not None:
            config.model.attention = config.attention
        drop_other_kinds_file_settings(config)
        logger = config.trainer.logger
        if getattr(logger, "init_args", None) is not None and logger.init_args.get("name") == "auto":
            dataset = config.data.dataset if config.data.dataset == "mnist" else f"{config.data.dataset}{config.data.canvas}"
            logger.init_args.name = f"{dataset}-{config.model.attention}"
        check_run(config)
        place_runs(config)
        self.resolve_resume(config)
        check_outputs(config)

    def instantiate_trainer(self, **kwargs):
        """As LightningCLI's, with checkpoints written atomically and checksummed (``AtomicCheckpointIO``)
        unless ``--trainer.plugins`` names another way to write them."""
        plugins = self._get(self.config_init, "trainer", default={}).get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    def instantiate_classes(self) -> None:
        """As LightningCLI's, but a setting refused by a class that jsonargparse builds itself (a
        callback added with ``--trainer.callbacks+=``) is raised as our one-line ``ConfigError``,
        not inside jsonargparse's list of every type the value failed to match."""
        try:
            super().instantiate_classes()
        except MisconfigurationException as exc:  # the Trainer refusing a setting (an accelerator it lacks)
            raise ConfigError(f"trainer: {str(exc).strip().splitlines()[0]}") from exc
        except ValueError as exc:
            cause = exc
            while cause is not None and not isinstance(cause, ConfigError):
                cause = cause.__cause__ or cause.__context__
            if cause is None or cause is exc:
                raise
            raise ConfigError(str(cause)) from exc
        if self.config.ckpt_path is not None:
            check_resumable(self.model, self.config.ckpt_path)

    @staticmethod
    def resolve_resume(config) -> None:
        """Check ``--ckpt_path`` before anything runs, and resume in the run folder it came from.

        "last" means the newest checkpoint that reads back whole under this run's
        ``<save_dir>/<name>/version_*/checkpoints`` (a ``last.ckpt`` cut short by a kill is skipped
        for the one before it). A checkpoint inside a run folder ``<dir>/<name>/version_N/checkpoints``
        continues that folder, wherever it now lies and whatever this command's save_dir: curves,
        pictures and checkpoints go on in the run they belong to, and no other run's files are touched.
        A checkpoint kept outside any run folder starts a new version folder.
        """
        path = config.ckpt_path
        if path is None:
            return
        logger = config.trainer.logger
        args = getattr(logger, "init_args", None)
        if path == "last":
            require(args is not None, "ckpt_path", path, "a file path when the TensorBoard logger is off")
            runs = Path(args.save_dir) / args.name
            path = newest_intact(runs)
            require(path is not None, "ckpt_path", "last",
                    f"a run with an intact checkpoint under {runs}/version_*/checkpoints (none found)")
        kind = read_checkpoint(path)["hyper_parameters"]["attention"]
        require(kind == config.model.attention, "ckpt_path", str(path),
                f"a checkpoint of {config.model.attention!r} attention (this one is {kind!r})")
        run = run_folder(path)
        if args is not None:
            if run is None:
                require(args.get("version") is None, "trainer.logger.init_args.version", args.get("version"),
                        f"null: {path} lies outside any run folder, so resuming from it starts a new version")
            else:
                require(args.get("version") in (None, run.name), "trainer.logger.init_args.version",
                        args.get("version"), f"null or {run.name!r}: resuming continues the checkpoint's own run {run}")
                args.save_dir, args.name, args.version = str(run.parent.parent), run.parent.name, run.name
                config.trainer.default_root_dir = args.save_dir
        config.ckpt_path = str(path)


# Upper bounds that keep a typo from filling the memory for minutes before failing: far above any
# setting of the paper or of docs/results.md, far below what a CPU or one GPU could hold.
MAX_GLIMPSES = 100
MAX_WIDTH = 16384


def drop_other_kinds_file_settings(config) -> None:
    """Reset to its default each setting of another attention kind that a config file gave.

    Why: one file serves every kind (configs/cluttered60.yaml sets the hard policy's std and the
    soft grid's stride), while a setting of another kind given on the command line is a mistake the
    model refuses (``--attention soft --model.std 0.5`` would otherwise change nothing, in silence).
    A value given on the command line over the file's is left for the model to refuse.
    """
    files: dict = {}
    for path in config.get("config") or []:
        files.update((yaml.safe_load(path.get_content()) or {}).get("model") or {})
    for name, default in other_kinds_defaults(config.model.attention).items():
        if name in files and config.model[name] == files[name]:
            config.model[name] = default


def check_run(config) -> None:
    """Refuse, before anything is built or written, a run that would train nothing or not fit in memory."""
    trainer, model = config.trainer, config.model
    require(trainer.max_epochs is None or trainer.max_epochs == -1 or trainer.max_epochs >= 1,
            "trainer.max_epochs", trainer.max_epochs, "an integer >= 1 (or -1: until max_steps); 0 would test an untrained model")
    require(trainer.max_steps == -1 or trainer.max_steps >= 1, "trainer.max_steps", trainer.max_steps,
            "an integer >= 1, or -1 (no limit); 0 would test an untrained model")
    require(trainer.limit_train_batches is None or trainer.limit_train_batches > 0, "trainer.limit_train_batches",
            trainer.limit_train_batches, "a number > 0 (batches, or a fraction of them); 0 would test an untrained model")
    require(model.glimpses <= MAX_GLIMPSES, "model.glimpses", model.glimpses,
            f"an integer in 1..{MAX_GLIMPSES}: every step's activations are kept for backpropagation")
    for name in ("what", "where", "glimpse_features", "hidden", "attention_size"):
        value = model[name]
        require(value <= MAX_WIDTH, f"model.{name}", value, f"an integer in 1..{MAX_WIDTH}")


def place_runs(config) -> None:
    """One folder for the runs: ``--trainer.default_root_dir`` and the logger's save_dir name the same one.

    Whichever of the two is given moves both (the other keeps the default, "runs"); two different
    folders are refused, since checkpoints follow the logger and a run would be split between them.
    """
    trainer, args = config.trainer, getattr(config.trainer.logger, "init_args", None)
    if args is None:  # no TensorBoard logger: default_root_dir alone places the checkpoints
        return
    if trainer.default_root_dir is None:  # Lightning's "the working folder": the logger's folder instead
        trainer.default_root_dir = args.save_dir
    root, save = str(trainer.default_root_dir), str(args.save_dir)
    if root == save:
        return
    if save == RUNS:
        args.save_dir = root
    elif root == RUNS:
        trainer.default_root_dir = save
    else:
        require(False, "trainer.default_root_dir", root,
                f"the logger's save_dir {save!r} or no value: runs and their checkpoints go in one folder")


def check_outputs(config) -> None:
    """Refuse folders where the run could not write its checkpoints and logs, before the first epoch."""
    args = getattr(config.trainer.logger, "init_args", None)
    if args is not None:
        require_writable_folder("trainer.logger.init_args.save_dir", args.save_dir)
    else:
        require_writable_folder("trainer.default_root_dir", config.trainer.default_root_dir or ".")
    for group in ("checkpoint", "last"):
        if config[group].dirpath is not None:
            require_writable_folder(f"{group}.dirpath", config[group].dirpath)


def check_resumable(model, path: str) -> None:
    """Refuse a checkpoint whose weights do not fit the model built from this command's settings,
    naming the first weight that differs and the settings that do, before anything is written."""
    ckpt = read_checkpoint(path)
    saved, mine = ckpt["state_dict"], model.state_dict()
    missing, unexpected = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
    shapes = [k for k in mine if k in saved and tuple(mine[k].shape) != tuple(saved[k].shape)]
    if not (missing or unexpected or shapes):
        return
    differ = [f"{k}={v!r} in the checkpoint, {model.hparams[k]!r} here" for k, v in ckpt["hyper_parameters"].items()
              if not k.startswith("_") and k in model.hparams and model.hparams[k] != v]
    first = (f"{shapes[0]} is {tuple(saved[shapes[0]].shape)} in the checkpoint, {tuple(mine[shapes[0]].shape)} here"
             if shapes else f"{(missing or unexpected)[0]} is {'missing from' if missing else 'only in'} the checkpoint")
    raise ConfigError(f"ckpt_path={path!r} is not allowed: its weights do not fit this model ({first}; "
                      f"settings that differ: {', '.join(differ) or 'none'}); resume with the run's own settings")


def main(args=None) -> GlimpseCLI:
    """Train, then test the best checkpoint (by validation error) on the test set."""
    cli = GlimpseCLI(
        GlimpseModel,
        GlimpseData,
        seed_everything_default=0,
        run=False,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "max_epochs": 30,
            "default_root_dir": RUNS,
            "callbacks": [EpochSeed()],
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": RUNS, "name": "auto"}},
        },
        args=args,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best" if best else None)
    return cli


def entry() -> None:
    """``train.py``: as ``main``, but a bad setting or file is one line on stderr and exit status 2."""
    try:
        main()
    except (ConfigError, CheckpointError, MnistUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as exc:  # a diverged run: the message names the step
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

"""The command line: LightningCLI over GlimpseModel and GlimpseData, then fit and test."""

import re
import sys
from pathlib import Path
from typing import Literal, Optional

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from glimpse.callbacks import AttentionPictures, EpochSeed
from glimpse.checkpoints import CheckpointError, checkpoint_kind
from glimpse.checks import ConfigError, require
from glimpse.data import GlimpseData, MnistUnavailableError
from glimpse.module import GlimpseModel


class GlimpseCLI(LightningCLI):
    """``--attention`` is a shorthand for ``--model.attention``; the image size comes from the data."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--attention", type=Optional[Literal["hard", "soft", "choice"]], default=None,
                            help="hard, soft or choice attention; when given, overrides model.attention")
        parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                            help="resume training from this checkpoint ('last' for the run's last one)")
        parser.link_arguments("data.image_size", "model.image_size", apply_on="instantiate")
        # Two checkpoint callbacks: the best by validation error, and last.ckpt after every epoch.
        # Lightning 2.6's save_last writes only beside a new best, which would resume a killed run
        # from its best epoch, however long ago that was. The best one is added first, so it is
        # ``trainer.checkpoint_callback`` (the one ``test(ckpt_path="best")`` uses).
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last")
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
        logger = config.trainer.logger
        if getattr(logger, "init_args", None) is not None and logger.init_args.get("name") == "auto":
            dataset = config.data.dataset if config.data.dataset == "mnist" else f"{config.data.dataset}{config.data.canvas}"
            logger.init_args.name = f"{dataset}-{config.model.attention}"
        self.resolve_resume(config)

    def instantiate_classes(self) -> None:
        """As LightningCLI's, but a setting refused by a class that jsonargparse builds itself (a
        callback added with ``--trainer.callbacks+=``) is raised as our one-line ``ConfigError``,
        not inside jsonargparse's list of every type the value failed to match."""
        try:
            super().instantiate_classes()
        except ValueError as exc:
            cause = exc
            while cause is not None and not isinstance(cause, ConfigError):
                cause = cause.__cause__ or cause.__context__
            if cause is None or cause is exc:
                raise
            raise ConfigError(str(cause)) from exc

    @staticmethod
    def resolve_resume(config) -> None:
        """Check ``--ckpt_path`` before anything runs, and resume into the run it came from.

        "last" means the newest ``version_*/checkpoints/last.ckpt`` of this run's logger name; a
        checkpoint inside ``version_N/checkpoints`` makes the logger continue ``version_N``, so
        curves and pictures go on at the same steps in the same event folder.
        """
        path = config.ckpt_path
        if path is None:
            return
        logger = config.trainer.logger
        args = getattr(logger, "init_args", None)
        if path == "last":
            require(args is not None, "ckpt_path", path, "a file path when the TensorBoard logger is off")
            runs = Path(args.save_dir) / args.name
            found = sorted(runs.glob("version_*/checkpoints/last.ckpt"), key=lambda p: int(re.sub(r"\D", "", p.parts[-3]) or 0))
            require(bool(found), "ckpt_path", path, f"a run with a last.ckpt under {runs}/version_*/checkpoints (none found)")
            path = found[-1]
        kind = checkpoint_kind(path)
        require(kind == config.model.attention, "ckpt_path", str(path),
                f"a checkpoint of {config.model.attention!r} attention (this one is {kind!r})")
        path = Path(path)
        if args is not None and args.get("version") is None and path.parent.name == "checkpoints" \
                and path.parent.parent.name.startswith("version_"):
            args.version = path.parent.parent.name
        config.ckpt_path = str(path)


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
            "default_root_dir": "runs",
            "callbacks": [EpochSeed()],
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": "runs", "name": "auto"}},
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

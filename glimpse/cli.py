"""The command line: LightningCLI over GlimpseModel and GlimpseData, then fit and test."""

from typing import Literal, Optional

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from glimpse.callbacks import AttentionPictures
from glimpse.data import GlimpseData
from glimpse.module import GlimpseModel


class GlimpseCLI(LightningCLI):
    """``--attention`` is a shorthand for ``--model.attention``; the image size comes from the data."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--attention", type=Optional[Literal["hard", "soft"]], default=None,
                            help="hard or soft attention; when given, overrides model.attention")
        parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                            help="resume training from this checkpoint ('last' for the run's last one)")
        parser.link_arguments("data.image_size", "model.image_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(AttentionPictures, "pictures")
        parser.set_defaults({
            "checkpoint.monitor": "val/error",
            "checkpoint.mode": "min",
            "checkpoint.save_last": True,
            "checkpoint.filename": "best-epoch{epoch:03d}",
            "checkpoint.auto_insert_metric_name": False,
        })

    def before_instantiate_classes(self) -> None:
        config = self.config
        if config.attention is not None:
            config.model.attention = config.attention
        logger = config.trainer.logger
        if getattr(logger, "init_args", None) is not None and logger.init_args.get("name") == "auto":
            dataset = config.data.dataset if config.data.dataset == "mnist" else f"{config.data.dataset}{config.data.canvas}"
            logger.init_args.name = f"{dataset}-{config.model.attention}"


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
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": "runs", "name": "auto"}},
        },
        args=args,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best" if best else None)
    return cli

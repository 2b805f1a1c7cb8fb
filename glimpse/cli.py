"""The command line: LightningCLI over GlimpseModel and GlimpseData, then fit and test."""

import argparse
import logging
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Literal, Optional

import yaml
from jsonargparse import DefaultHelpFormatter
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, Timer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from glimpse.callbacks import AttentionPictures, EpochSeed, RunCheckpoint
from glimpse.checkpoints import (AtomicCheckpointIO, CheckpointError, newest_intact, other_kinds_defaults, read_checkpoint,
                                 run_folder)
from glimpse.checks import ConfigError, require, require_writable_folder
from glimpse.data import GlimpseData, MnistUnavailableError
from glimpse.models import KINDS
from glimpse.module import GlimpseModel
from glimpse.records import budget_name, commit, kind_name, machine, setting_name, write_summary

ROOT = Path(__file__).resolve().parents[1]
# The default run, used when no --config is given: the best 28x28 recipe, cut to about 10 minutes of one core.
DEFAULT_CONFIGS = ("configs/recipes/mnist.yaml", "configs/default.yaml")
USAGE = "python train.py [--attention KIND] [--config FILE] [--name NAME] [--model.X V] [--data.X V] [--trainer.X V]"
DESCRIPTION = """Train a hard, soft or choice attention model, then test its best checkpoint (by validation error).

The project's own options come first; Lightning's Trainer options (--trainer.*) follow them.
  --attention {hard,soft,choice}  the kind of attention (the one thing that differs between kinds)
  --config FILE                   a settings file (none given: configs/default.yaml, the default run):
                                  configs/mnist.yaml, translated60.yaml, cluttered60.yaml,
                                  cluttered100.yaml (the paper's), configs/recipes/<setting>.yaml (the
                                  comparison's recipes); several may be given, later ones win
  --name NAME                     the run folder's name (default: data set, kind and the settings given here)
  --seed_everything N             the seed (default 0)
  --model.*                       the model, e.g. --model.glimpses 6 --model.core lstm --model.std 0.1
                                  (every argument is documented under "Model" below and in glimpse/module.py)
  --data.*                        the data, e.g. --data.dataset cluttered --data.canvas 100 --data.shift 2
  --ckpt_path PATH|last           resume a run in its own folder
  --print_config                  print the resolved settings as YAML and exit
Runs go to runs/<name>/version_N/: TensorBoard events, config.yaml, checkpoints/, run.json (the record)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, but the description keeps its lines: it is a table of the options."""


# Settings that name a run when given on the command line: the ones that change what is trained.
NAMING_PREFIXES = ("--model.", "--data.", "--seed_everything", "--trainer.max_epochs", "--trainer.max_time",
                   "--trainer.precision")
NOT_NAMING = {"data.root", "data.num_workers", "data.eval_batch_size"}

RUNS = "runs"  # the default folder of runs


class GlimpseCLI(LightningCLI):
    """``--attention`` is a shorthand for ``--model.attention``; the image size comes from the data."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--attention", type=Optional[Literal[tuple(KINDS)]], default=None,
                            help=f"{', '.join(KINDS)} attention; when given, overrides model.attention")
        parser.add_argument("--name", type=Optional[str], default=None,
                            help="the run folder's name under the logger's save_dir (default: data set, kind and "
                                 "the settings given on the command line)")
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
        if getattr(logger, "init_args", None) is not None:
            if config.name is not None:
                require(bool(re.fullmatch(r"[\w.=+-]+", config.name)), "name", config.name,
                        "a folder name of letters, digits and . _ = + - (no slashes or spaces)")
                logger.init_args.name = config.name
            elif logger.init_args.get("name") == "auto":
                logger.init_args.name = self.run_name(config)
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

    def parse_arguments(self, parser, args) -> None:
        self.given = list(sys.argv[1:] if args is None else args)  # what the user typed: it names the run
        if not any(a in ("-c", "--config") or a.startswith("--config=") for a in self.given):
            parser.default_config_files = [str(ROOT / path) for path in DEFAULT_CONFIGS]
        super().parse_arguments(parser, args)

    def run_name(self, config) -> str:
        """Data set and kind, then every setting given on the command line (the config files are the
        recipe): ``mnist-hard``, ``cluttered60-soft-core=lstm-seed=1``. Runs that differ get folders that
        say how; runs that do not are versions of one folder."""
        kind = kind_name(config.model.attention, config.model.estimator)
        parts = [setting_name(config.data.dataset, config.data.canvas), kind]
        given = getattr(self, "given", [])
        for i, token in enumerate(given):
            if not token.startswith(NAMING_PREFIXES):
                continue
            key, _, value = token[2:].partition("=")
            if not value and i + 1 < len(given):
                value = given[i + 1]
            if key in NOT_NAMING or key == "model.attention":
                continue
            short = "seed" if key == "seed_everything" else key.split(".")[-1]
            value = re.sub(r"[^\w.+-]", "", value)  # a folder name: no slashes, spaces or quotes
            parts.append(f"{short}={value}")
        return "-".join(parts)

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
    for stage in ("train", "val", "test"):
        # Lightning's type puts float first, so the command line and config files turn a count of 1 into
        # 1.0, which Lightning reads as every batch: a "one batch" check would silently run them all.
        name = f"limit_{stage}_batches"
        require(trainer[name] != 1, f"trainer.{name}", trainer[name],
                "a count >= 2, a fraction below 1, or nothing for every batch (1 is read as 1.0, all of them)")
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
    quiet_library_notices()
    cli = GlimpseCLI(
        GlimpseModel,
        GlimpseData,
        seed_everything_default=0,
        run=False,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"usage": USAGE, "description": DESCRIPTION, "formatter_class": HelpFormatter},
        trainer_defaults={
            "max_epochs": 30,
            "precision": default_precision(),
            "default_root_dir": RUNS,
            "callbacks": [EpochSeed()],
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": RUNS, "name": "auto", "default_hp_metric": False}},
        },
        args=args,
    )
    trainer = cli.trainer
    if not any(isinstance(c, Timer) for c in trainer.callbacks):
        trainer.callbacks.append(Timer())  # no limit: it measures training time, kept across resumes
    if trainer.loggers and not any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks):
        trainer.callbacks.append(LearningRateMonitor(logging_interval="step"))  # the scheduler names it train/lr
    board = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if board is not None and trainer.is_global_zero:
        print(f"run folder: {board.log_dir}", flush=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    source = commit()
    trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
    minutes = timer.time_elapsed() / 60  # now: testing restores the best checkpoint's Timer with its weights
    limit = timer.time_remaining()  # None without a wall-clock budget
    budget = None if limit is None else timer.time_elapsed() + limit
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    results = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None)
    if board is not None and best and results and trainer.is_global_zero:
        summary = run_summary(cli, Path(board.log_dir), results[0], Path(best), started, source, minutes,
                              budget)
        board.log_hyperparams(cli.model.hparams, {f"hparams/{k}": summary[k] for k in
                                                  ("val_error", "test_error_one_path", "test_error_m10")
                                                  if summary[k] is not None})
        write_summary(Path(board.log_dir), summary)
    return cli


def default_precision() -> str:
    """bfloat16 autocast where the processor computes it natively (CPUs with AVX-512 BF16 or AMX,
    GPUs from Ampere on): the step is bound by matrix products, which run much faster in bfloat16
    there, and the errors stay within float32's spread over seeds (docs/results.md, "Speed and time
    to accuracy"); float32 elsewhere, where bfloat16 would be emulated and slower."""
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"


def run_summary(cli: GlimpseCLI, run: Path, test: dict, best: Path, started: str, source: str,
                minutes: float, budget: float | None) -> dict:
    """What ``run.json`` records of a finished run (see glimpse.records): the run's settings, where
    and on what it ran, its best validation error, and its one test-set evaluation."""
    trainer, model, config = cli.trainer, cli.model, cli.config
    stochastic = model.net.stochastic
    m = model.eval_samples
    pixels = model.net.cost()["pixels"]
    configs = [relative(Path(str(p))) for p in (config.get("config") or [])] or list(DEFAULT_CONFIGS)
    return {
        "run": str(run), "started": started,  # the logger's folder (trainer.log_dir would wait for every rank)
        "setting": setting_name(config.data.dataset, config.data.canvas),
        "kind": kind_name(config.model.attention, config.model.estimator),
        "recipe": "+".join(configs),
        "budget": budget_name(budget),
        "seed": config.seed_everything,
        "epochs": round(trainer.global_step / max(1, trainer.num_training_batches), 2),
        "train_minutes": round(minutes, 2),
        "machine": machine(), "commit": source, "precision": str(trainer.precision),
        "val_error": float(trainer.checkpoint_callback.best_model_score),
        "test_error_one_path": test["test/error_one_path"],
        "test_error_m10": test["test/error"] if stochastic and m == 10 else None,
        "pixels_per_image": pixels,
        # M hard paths read M times the pixels; choice's M paths share one pass over the grid.
        "pixels_per_image_m10": (10 * pixels if model.net.kind == "hard" else pixels) if stochastic else None,
        "best_checkpoint": best.name,
        "command": ["train.py", *getattr(cli, "given", [])],
    }


def relative(path: Path) -> str:
    """A config file's path as the repository names it (configs/...), else as given."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_library_notices() -> None:
    """Silence, at their source, the library notices every run would print and no user can act on:
    Lightning's advertisement for its cloud logger, the deprecation inside Lightning's own pytree
    helper (fixed upstream, not ours to fix), and the model summary's note that it sizes a bfloat16
    model as float32. Each filter matches one message, so a user's own
    warnings still show."""
    logging.getLogger("lightning.fabric.utilities.rank_zero").addFilter(_DropTip())
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTip())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", module=r"lightning\.")
    # bfloat16 runs: the model summary only estimates the model's size in MB less well
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")


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

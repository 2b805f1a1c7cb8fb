"""train.py end to end: both kinds run, learn on real MNIST, save checkpoints that load alone."""

from __future__ import annotations


import pytest
import torch
import yaml

from glimpse.models import KINDS
from glimpse.module import GlimpseModel
from tests.conftest import FAST_LR, REPO, SMALL_NET


@pytest.mark.parametrize("kind, precision", [("hard", "32-true"), ("soft", "32-true"), ("hard", "bf16-mixed"),
                                             ("soft", "bf16-mixed"), ("choice", "bf16-mixed")])
def test_fast_dev_run(cli, kind, precision):
    """Every stage runs; bfloat16 autocast (faster on CPUs with AVX-512 BF16) too, for every kind."""
    run = cli("--attention", kind, "--trainer.fast_dev_run=true", f"--trainer.precision={precision}",
              "--data.eval_batch_size=100")  # one batch per stage: a small one (bfloat16 is slow without AVX-512)
    assert type(run.model.net) is KINDS[kind], "the network of the kind asked for was built and trained"
    images, _ = next(iter(run.datamodule.test_dataloader()))
    with torch.no_grad(), run.trainer.precision_plugin.forward_context():  # the context every step ran in
        logits = run.model.net(images[:4]).logits
    assert logits.dtype == (torch.bfloat16 if precision == "bf16-mixed" else torch.float32)
    assert torch.isfinite(torch.tensor(run.trainer.callback_metrics["test/loss"].item()))


def test_config_files_and_overrides_compose(cli):
    run = cli("--config", str(REPO / "configs/cluttered60.yaml"), "--attention", "soft", "--model.glimpses", "4",
              "--data.fragments", "6", "--trainer.fast_dev_run=true")
    net, test = run.model.net, run.datamodule.test_set
    assert (type(net), net.glimpses, tuple(test.images.shape[1:])) == (KINDS["soft"], 4, (60, 60))
    # the file's data set, with the command line's fragments over the file's 4
    assert (run.datamodule.hparams.dataset, run.datamodule.hparams.fragments) == ("cluttered", 6)


def test_print_config_shows_the_default_runs_recipe(capsys):
    """In-process (train.py as a script is test_front_door's): a process would only add ~10 s of imports."""
    from glimpse.cli import main
    with pytest.raises(SystemExit) as stop:
        main(args=["--attention", "soft", "--print_config"])
    assert stop.value.code in (0, None)
    out = capsys.readouterr().out
    # no --config: the default run's recipe
    epochs = yaml.safe_load((REPO / "configs/default.yaml").read_text())["trainer"]["max_epochs"]
    assert "attention: soft" in out and f"max_epochs: {epochs}" in out and "core: lstm" in out


@pytest.mark.slow
@pytest.mark.parametrize("kind, limit, epochs, ceiling", [("hard", 100, 4, 0.35), ("soft", 100, 3, 0.45)])
def test_short_run_learns_real_mnist(cli, tmp_path, kind, limit, epochs, ceiling):
    """A few thousand real images, a fixed number of steps: far below the 90% error of chance. A narrow
    net, and soft reads a 4x4 grid (stride 6), not the recipe's 6x6: the same code learns, in about a third
    of the time of the recipe's widths."""
    run = cli("--attention", kind, *SMALL_NET, FAST_LR, *(["--model.grid_stride=6"] if kind == "soft" else []),
              f"--trainer.max_epochs={epochs}", f"--trainer.limit_train_batches={limit}",
              "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--model.eval_samples=2")
    metrics = run.trainer.callback_metrics
    assert metrics["test/error"] < ceiling, metrics
    if kind == "hard":
        assert metrics["test/error_greedy"] < ceiling, metrics
        assert 0 < metrics["test/reward"] <= 1
    # checkpoints: best and last, and the best loads with no config repeated
    ckpts = sorted(p.name for p in (tmp_path / "runs").rglob("*.ckpt"))
    assert "last.ckpt" in ckpts and any(name.startswith("best-epoch") for name in ckpts), ckpts
    best = GlimpseModel.load_from_checkpoint(run.trainer.checkpoint_callback.best_model_path)
    assert best.hparams.attention == kind and best.net.kind == kind
    assert list((tmp_path / "runs").rglob("config.yaml")), "the resolved config is saved beside the logs"


@pytest.mark.slow
def test_soft_attention_finds_the_digit_on_a_blank_canvas(cli):
    """Translated MNIST: after a short run most attention weight lies on the 28x28 digit."""
    run = cli("--attention", "soft", "--config", str(REPO / "configs/translated60.yaml"), "--model.patch=8",
              "--model.scales=1", "--model.glimpses=3", "--model.grid_stride=6", "--trainer.max_epochs=1",
              "--trainer.limit_train_batches=100", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
              "--data.eval_batch_size=250")
    net, val = run.model.net.eval(), run.datamodule.val_set
    images, _ = val.__getitems__(list(range(500)))
    with torch.no_grad():
        weights = net(images).weights.flatten(2)  # (B, T, L)
    centres = (net.grid + 1) * 30  # (L, 2) pixel (x, y)
    left_top = val.positions[:500, None].float()  # (B, 1, 2)
    inside = ((centres >= left_top) & (centres < left_top + 28)).all(-1).float()  # (B, L)
    on_digit = (weights * inside[:, None]).sum(-1).mean().item()
    uniform = inside.mean().item()
    print(f"attention on the digit: {on_digit:.3f} (uniform: {uniform:.3f})")
    assert uniform < 0.3
    assert on_digit > 0.75, (on_digit, uniform)


def test_default_root_dir_places_the_runs(data, tmp_path, monkeypatch):
    """--trainer.default_root_dir alone moves the whole run (logs, config, checkpoints), not half of it."""
    from glimpse.cli import main

    monkeypatch.chdir(tmp_path)
    main(args=[f"--data.root={data}", "--trainer.default_root_dir=elsewhere", "--trainer.enable_progress_bar=false",
               "--attention", "soft", "--name=mnist-soft", "--model.glimpses=2", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
               "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--data.eval_batch_size=100"])
    run = tmp_path / "elsewhere" / "mnist-soft" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"], "nothing in ./runs"


@pytest.mark.parametrize("kind, config, std, grid_stride", [("soft", "cluttered60", 0.1, 4), ("hard", "cluttered100", 0.25, 4),
                                                            ("choice", "cluttered100", 0.1, 8)])
def test_a_config_files_settings_of_other_kinds_are_reset(kind, config, std, grid_stride):
    """One config file serves every kind: its settings of another kind fall back to their defaults (so that
    the model can refuse them when given on the command line), its settings of this kind stay; a value
    given over the file's is left as given."""
    from jsonargparse import Namespace, Path as ConfigPath

    from glimpse.cli import drop_other_kinds_file_settings

    def settings(**given):
        file = yaml.safe_load((REPO / "configs" / f"{config}.yaml").read_text())["model"]
        config_ = Namespace(config=[ConfigPath(str(REPO / "configs" / f"{config}.yaml"))],
                            model=Namespace(attention=kind, **{**file, **given}))
        drop_other_kinds_file_settings(config_)
        return config_.model.std, config_.model.grid_stride

    assert settings() == (std, grid_stride)
    assert settings(std=0.5, grid_stride=2) == (0.5, 2), "given on the command line: for the model to judge"

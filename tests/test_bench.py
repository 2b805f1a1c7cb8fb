"""The speed benchmark: a real cell under each precision with its bare reference, the epoch timer
the side-by-side run reads, and bad input refused up front."""

from __future__ import annotations

import re

import pytest
import torch

from glimpse import bench

CUDA = torch.cuda.is_available()  # Lightning's default accelerator takes the GPU where there is one
DEVICE = "cuda" if CUDA else "cpu"


@pytest.mark.parametrize("precision, ran", [("32-true", "32-true"), ("bf16-mixed", "bf16-mixed"),
                                            # Lightning runs float16 autocast as bf16 on CPU
                                            ("16-mixed", "16-mixed" if CUDA else "bf16-mixed")])
def test_one_cell_trains_and_evaluates(data, precision, ran):
    """The row records the precision that ran, not the one asked for, and times exactly the steps
    asked for after the warm-up, in Lightning and in the bare loop alike."""
    row = bench.measure("hard", "mnist", None, steps=2, warmup=1, batch=16, root=data, precision=precision,
                        eval_seconds=0.5 if precision == "32-true" else 0)
    assert row["precision"] == ran and row["device"].startswith(DEVICE)
    assert row["train_images"] == row["bare_images"] == 2 * 16
    if precision == "32-true":  # evaluation is timed for at least the seconds asked for, in whole batches ...
        assert row["eval_images"] / row["eval_img_s"] >= 0.5 and row["eval_images"] >= 3 * 16
        assert row["eval_images"] % 16 == 0
    else:  # ... and for at least 3 batches
        assert row["eval_images"] == 3 * 16
    assert row["overhead"] == pytest.approx(row["bare_img_s"] / row["train_img_s"])
    assert (row["pixels"], row["glimpses"]) == (6 * 8 * 8, 6)


def test_autocast_reaches_the_evaluation_and_the_bare_loop(monkeypatch, data):
    """bf16-mixed must time evaluation and the bare loop under the same autocast as training, or
    the figures differ in kind."""
    seen = {"eval": [], "bare": []}
    predict, rollout = bench.GlimpseModel.predict_proba, bench.GlimpseModel.rollout_loss

    def spy_predict(self, images, samples):
        seen["eval"].append(torch.is_autocast_enabled(DEVICE))
        return predict(self, images, samples)

    def spy_rollout(self, images, labels, samples):
        if self._trainer is None or not self.trainer.training:  # the bare loop: the warm-up before fit, the timing after
            seen["bare"].append(torch.is_autocast_enabled(DEVICE))
        return rollout(self, images, labels, samples)

    monkeypatch.setattr(bench.GlimpseModel, "predict_proba", spy_predict)
    monkeypatch.setattr(bench.GlimpseModel, "rollout_loss", spy_rollout)
    bench.measure("hard", "mnist", None, steps=1, warmup=1, batch=16, root=data, precision="bf16-mixed")
    assert seen["eval"] and all(seen["eval"])
    assert len(seen["bare"]) == 4 and all(seen["bare"])  # 2 warm-up steps, 1 + 1 timed


def test_epoch_timer_prints_the_line_the_side_by_side_run_reads(cli, capsys):
    cli("--attention", "hard", "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--data.batch_size=16",
        "--trainer.limit_val_batches=0", "--trainer.limit_test_batches=0", "--model.glimpses=2",
        "--trainer.callbacks+=glimpse.bench.EpochTimer")
    found = re.findall(r"glimpse.bench epoch: (\d+) images in ([0-9.]+) s", capsys.readouterr().out)
    assert len(found) == 1 and int(found[0][0]) == 3 * 16 and float(found[0][1]) > 0


def test_a_peer_that_is_not_a_git_directory_is_one_line(tmp_path, data):
    with pytest.raises(SystemExit, match="cannot clone"):
        bench.peer_epoch(str(tmp_path / "nothing"), data)


def test_unknown_precision_is_refused_before_any_work(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--precision", "8-true"])
    err = capsys.readouterr().err
    assert "'8-true'" in err and "bf16-mixed" in err

"""Figures for the results: curves from real TensorBoard logs, cost from a real benchmark file."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from glimpse.plots import curve
from glimpse.plots import main as plots
from tests.conftest import REPO


@pytest.mark.slow
def test_curves_from_a_run(cli, tmp_path):
    cli("--attention", "hard", "--name=mnist-hard", "--trainer.max_epochs=4", "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2", "--model.glimpses=2",
        "--data.eval_batch_size=100", "--trainer.check_val_every_n_epoch=2")
    (run,) = (tmp_path / "runs" / "mnist-hard").glob("version_*")
    assert curve(run, "val/error")[0] == [2, 4], "validated every second epoch: drawn at epochs 2 and 4, not 1 and 2"
    plots([str(run), "--out", str(tmp_path / "curves.png")])
    assert Image.open(tmp_path / "curves.png").size == (1210, 440)
    with pytest.raises(SystemExit) as stop:
        plots([str(run), "--tag", "val/nothing", "--out", str(tmp_path / "x.png")])
    assert stop.value.code == 2


@pytest.mark.slow
def test_cost_figure_from_the_benchmark(data, tmp_path):
    """The bench's parent runs in this process (its cells still run in processes of their own)."""
    from glimpse.bench import main as bench
    rows = tmp_path / "cost.json"
    bench(["--kinds", "hard", "choice", "--canvas", "60", "--steps", "2", "--warmup", "1", "--eval-seconds", "0",
           "--batch-size", "16", "--root", data, "--json", str(rows)])
    written = json.loads(rows.read_text())
    got = written["rows"]
    assert "threads" in written["machine"] and written["command"].startswith("python -m glimpse.bench --kinds hard")
    assert [(r["kind"], r["canvas"]) for r in got] == [("hard", 60), ("choice", 60)]
    assert got[0]["pixels"] == 8 * 3 * 12 * 12 < got[1]["pixels"]  # cluttered60's model; choice reads the grid
    assert all(r["train_img_s"] > 0 for r in got)
    plots(["--cost", str(rows), "--out", str(tmp_path / "cost.png")])
    assert Image.open(tmp_path / "cost.png").size == (1210, 440)


def test_needs_runs_or_cost(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        plots(["--out", str(tmp_path / "x.png")])
    assert stop.value.code == 2 and "give either run folders or --cost FILE" in capsys.readouterr().err


def one_line_error(argv: list[str], capsys) -> str:
    """The one stderr line of a plots command that must stop with status 2."""
    with pytest.raises(SystemExit) as stop:
        plots(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1, lines
    return lines[0]


def test_bad_files_and_paths_are_one_line_and_status_2(tmp_path, capsys):
    """A missing tag, a --cost file that is not the benchmark's, an --out that cannot be written (checked
    before any log is read)."""
    from torch.utils.tensorboard import SummaryWriter
    run = tmp_path / "run"
    with SummaryWriter(str(run)) as writer:
        writer.add_scalar("val/error", 0.5, 1)
    assert "no scalar 'val/nothing' (has val/error)" in one_line_error([str(run), "--tag", "val/nothing", "--reach", "0.1"], capsys)
    assert "no such folder" in one_line_error([str(tmp_path / "nothing"), "--reach", "0.1"], capsys)
    (tmp_path / "empty").mkdir()
    assert "no TensorBoard scalars there" in one_line_error([str(tmp_path / "empty"), "--reach", "0.1"], capsys)
    notes = tmp_path / "notes.json"
    notes.write_text('[{"kind": "hard"}]')
    assert "not a `python -m glimpse.bench --json` file" in one_line_error(["--cost", str(notes), "--out", str(tmp_path / "c.png")], capsys)
    notes.write_text("kind,canvas")
    assert "not a JSON file" in one_line_error(["--cost", str(notes), "--out", str(tmp_path / "c.png")], capsys)
    assert "no such file" in one_line_error(["--cost", str(tmp_path / "none.json"), "--out", str(tmp_path / "c.png")], capsys).lower()
    unwritable = REPO / "train.py" / "curves.png"
    assert one_line_error([str(tmp_path / "nothing"), "--out", str(unwritable)], capsys) == \
        f"error: --out='{unwritable}' is not allowed: expected a file in a folder that can be created and written " \
        f"({REPO / 'train.py'} is not a folder)"


def test_time_to_a_threshold_from_real_event_files(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter
    run = tmp_path / "run"
    with SummaryWriter(str(run)) as writer:
        writer.add_scalar("train/loss", 2.0, 10, walltime=1000.0)  # the run's first scalar
        for epoch, (error, minute) in enumerate([(0.20, 1), (0.05, 2), (60 / 5000, 3.5), (0.02, 5)]):
            writer.add_scalar("val/error", error, epoch, walltime=1000.0 + 60 * minute)
    plots([str(run), "--reach", "0.012"])
    # exactly 1.2 % (60 of 5,000), which the float32 log reads back as 0.0120000001, counts as reached
    assert capsys.readouterr().out.strip() == f"{run}: val/error <= 0.012 at epoch 3, 3.5 min"
    assert curve(run, "val/error")[2] == [1, 2, 3.5, 5], "the figure's minutes count from the first training log too"
    plots([str(run), "--reach", "0.01"])
    assert "never <= 0.01 in 4 epochs (5.0 min); best 0.012 at epoch 3" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        plots([str(run)])  # neither --reach nor --out: nothing to do
    assert stop.value.code == 2 and "--out FILE is needed" in capsys.readouterr().err


def test_epochs_come_from_the_logged_epoch_not_the_count_of_points(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter
    run = tmp_path / "run"
    with SummaryWriter(str(run)) as writer:
        for epoch in range(6):  # Lightning logs `epoch` beside every metric; validation every third epoch
            step = 10 * (epoch + 1)
            writer.add_scalar("epoch", epoch, step - 5, walltime=1000.0 + step)
            writer.add_scalar("train/loss", 1.0, step - 5, walltime=1000.0 + step)
            if epoch % 3 == 2:
                writer.add_scalar("epoch", epoch, step, walltime=1000.0 + step)
                writer.add_scalar("val/error", 0.3 - 0.1 * epoch / 3, step, walltime=1000.0 + step)
    assert curve(run, "val/error")[0] == [3, 6]
    plots([str(run), "--reach", "0.15"])
    assert capsys.readouterr().out.strip().endswith("at epoch 6, 0.8 min")  # 50 s after the first scalar
    plots([str(run), "--reach", "0.01"])
    assert "never <= 0.01 in 6 epochs" in capsys.readouterr().out

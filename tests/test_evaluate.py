"""python -m glimpse.evaluate: loads any kind with no config, and refuses bad files in one line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from glimpse.checkpoints import load_model
from tests.conftest import REPO, SMALL_NET


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory) -> dict[str, Path]:
    """One briefly trained checkpoint per kind, made through train.py's code path."""
    from glimpse.cli import main

    runs = tmp_path_factory.mktemp("runs")
    found = {}
    for kind in ("hard", "soft", "choice"):
        main(args=[f"--data.root={data}", f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.default_root_dir={runs}",
                   "--trainer.enable_progress_bar=false", "--attention", kind, f"--name=mnist-{kind}", "--trainer.max_epochs=1",
                   "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
                   "--data.eval_batch_size=100", "--model.glimpses=3", *SMALL_NET])
        found[kind] = runs / f"mnist-{kind}" / "version_0" / "checkpoints" / "last.ckpt"
    return found


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glimpse.evaluate", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_evaluates_every_kind_side_by_side(checkpoints, data, tmp_path):
    out = tmp_path / "rows.json"
    done = evaluate(*map(str, checkpoints.values()), "--samples", "2", "--root", data, "--json", str(out),
                    "--trajectories", str(tmp_path / "looks.png"), "--count", "4", "--locations", "50")
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert [r["kind"] for r in rows] == ["hard", "soft", "choice"]
    for row in rows:
        assert row["dataset"] == "mnist" and row["glimpses"] == 3 and 0 <= row["test_error"] <= 1
        assert row["images_per_s"] > 0 and row["pixels_per_image"] > 0
        assert (row["test_error_greedy"] is None) == (row["kind"] == "soft")
        assert row["samples"] == (1 if row["kind"] == "soft" else 2)
    assert rows[0]["pixels_per_image"] == 3 * 64 and rows[1]["pixels_per_image"] == 36 * 64
    for row in rows:  # --locations: where it looked, per step
        assert [s["step"] for s in row["steps"]] == [1, 2, 3]
        assert all(-1 <= s["x"] <= 1 and -1 <= s["y"] <= 1 and 0 <= s["border"] <= 1 and s["state_norm"] > 0
                   for s in row["steps"])
    assert rows[0]["steps"][0]["x"] == rows[0]["steps"][0]["spread"] == 0  # hard starts at the centre
    assert rows[0]["steps"][0]["on_digit"] == 1  # ... and on 28x28 MNIST the digit's box is the whole image
    for row in rows:  # --locations: how often the path found the digit, and the error with and without
        found = row["found"]
        assert found["images"] == 50 and 0 <= found["share"] <= 1 and all(0 <= s["on_digit"] <= 1 for s in row["steps"])
        parts = [(found["share"], found["error_found"]), (1 - found["share"], found["error_missed"])]
        assert found["error_greedy"] == pytest.approx(sum(w * e for w, e in parts if e is not None), abs=1e-6)
        by_looks = row["by_looks"]  # ... and by how many of the glimpses were on it
        assert [b["looks"] for b in by_looks] == [0, 1, 2, 3] and sum(b["share"] for b in by_looks) == pytest.approx(1)
        assert by_looks[0]["share"] == pytest.approx(1 - found["share"])
        assert found["error_greedy"] == pytest.approx(sum(b["share"] * b["error"] for b in by_looks if b["error"] is not None))
    assert rows[0]["by_looks"][0]["share"] == 0  # the hard path's first glimpse, at the centre, is on every digit
    assert [("sampled" in row, row["sampled"]["samples"] if "sampled" in row else None) for row in rows] == \
        [(True, 2), (False, None), (True, 2)]  # the search of M sampled paths: hard and choice only
    for row in (rows[0], rows[2]):
        assert row["sampled"]["images"] == 50 and row["sampled"]["share_one"] == row["sampled"]["share"] == 1
    for n in range(3):
        still = Image.open(tmp_path / f"looks-{n}.png")
        assert still.size == (3 * 170 + 2, 4 * 170 + 2)
        movie = Image.open(tmp_path / f"looks-{n}.gif")
        assert movie.n_frames == 3, "one frame per step"
    # header; per checkpoint: row, steps, glimpses on the digit, found, "drawn:"; hard and choice: sampled paths
    assert len(done.stdout.strip().splitlines()) == 1 + 3 * (1 + 4 + 1 + 1 + 1) + 2


def test_evaluation_is_the_test_step_training_ends_with(checkpoints, data, monkeypatch):
    """One place for the test metrics: every test image goes through the module's own test step (the
    one each training run ends with), once per row, the greedy path only when asked; the rows' errors
    are the predictions' errors."""
    from glimpse import evaluate as evaluate_module
    from glimpse.module import GlimpseModel

    stages, step = [], GlimpseModel.shared_step

    def recording(self, batch, stage):
        stages.append((stage, len(batch[1])))
        return step(self, batch, stage)

    monkeypatch.setattr(GlimpseModel, "shared_step", recording)
    for kind in ("hard", "soft"):
        model, ckpt = load_model(checkpoints[kind])
        images = evaluate_module.test_data(ckpt, evaluate_module.parse([str(checkpoints[kind]), "--root", data]), model)
        stages.clear()
        rows = [evaluate_module.evaluate(model, images, samples=3, greedy=greedy) for greedy in (True, False)]
        assert {stage for stage, _ in stages} == {"test"} and sum(n for _, n in stages) == 2 * 10_000
        wrong, wrong_one = 0, 0
        with torch.no_grad():
            for x, y in evaluate_module.loader(images, "test"):
                wrong_one += int((model.predict_proba(x, greedy=True).argmax(-1) != y).sum())
                wrong += int((model.predict_proba(x, 3).argmax(-1) != y).sum())
        if kind == "soft":  # one pass: nothing sampled, so the error is exactly its predictions'
            assert rows[0]["test_error"] == pytest.approx(wrong / 10_000) and rows[0]["test_error_greedy"] is None
        else:  # the greedy path is deterministic; the sampled error is of other draws
            assert rows[0]["test_error_greedy"] == pytest.approx(wrong_one / 10_000)
            assert rows[1]["test_error_greedy"] is None, "the greedy path runs only when asked"
            assert abs(rows[0]["test_error"] - wrong / 10_000) < 0.1


def test_on_digit_matches_where_the_data_put_the_digit(data):
    """The digit's pixels on a blank canvas are on its box; the same spot 28 pixels away is not."""
    from glimpse.data import GlimpseData
    from glimpse.evaluate import on_digit

    canvases = GlimpseData("translated", root=data, canvas=60)
    canvases.setup("test")
    images, corners = canvases.test_set.images[:50], canvases.test_set.positions[:50]
    brightest = images.flatten(1).argmax(1)
    rows, cols = brightest // 60, brightest % 60
    loc = torch.stack([(cols + 0.5) / 30 - 1, (rows + 0.5) / 30 - 1], -1)[:, None]  # (B, 1, 2) pixel centres
    assert on_digit(loc, corners, 60).all()
    for shift in ([28 / 30, 0], [0, -28 / 30]):
        assert not on_digit(loc + torch.tensor(shift), corners, 60).any()
    edges = torch.tensor([[[-0.5, -0.25], [0.375, -0.25], [-0.515625, 0.0]]])  # x = 16, 44, 15.5 px on 64
    assert on_digit(edges, torch.tensor([[16, 24]]), 64).tolist() == [[True, False, False]]  # the box is [16, 44)


def test_sampled_search_counts_what_some_path_found():
    """On 60x60, a digit over the centre is found by every path's first glimpse; one in the top-left
    corner only by the paths that wander there, more often by some of ten paths than by the first;
    the M-averaged error is the same as predict_proba's and splits over found and missed images."""
    from glimpse.evaluate import sampled_search
    from glimpse.module import GlimpseModel

    torch.manual_seed(0)
    model = GlimpseModel("hard", image_size=60, glimpses=3, patch=12, std=1.0).eval()
    images, labels = torch.rand(200, 1, 60, 60), torch.arange(200) % 10
    centre, corner = torch.full((200, 2), 16), torch.zeros(200, 2, dtype=torch.long)  # boxes [16, 44) and [0, 28)
    torch.manual_seed(1)
    over = sampled_search(model, images, labels, centre, samples=10, batch_size=2000)
    assert over["share_one"] == over["share"] == 1 and over["error_missed"] is None
    torch.manual_seed(1)
    away = sampled_search(model, images, labels, corner, samples=10, batch_size=2000)
    assert 0 < away["share_one"] < away["share"] < 1
    torch.manual_seed(1)
    wrong = (model.predict_proba(images, samples=10).argmax(-1) != labels).float().mean().item()
    assert away["error"] == pytest.approx(wrong)  # one chunk of all 200 images: the same draws as predict_proba
    parts = [(away["share"], away["error_found"]), (1 - away["share"], away["error_missed"])]
    assert away["error"] == pytest.approx(sum(w * e for w, e in parts), abs=1e-6)


@pytest.mark.slow
def test_several_sample_counts_give_one_row_each_and_repeat_exactly(checkpoints, data, tmp_path, monkeypatch):
    """--samples 1 4: a row per M for hard, one row for soft; the same --seed gives the same errors
    (without the seed, two runs of a barely trained policy's M = 1 sampling disagree), in a new process
    and in this one; the greedy path, the same for every M, is run once per checkpoint, not once per row."""
    from glimpse import evaluate as evaluate_module
    from glimpse.module import GlimpseModel

    greedy_batches = []
    predict = GlimpseModel.predict_proba

    def counting(self, images, *args, greedy=False, **kwargs):
        if greedy:
            greedy_batches.append(len(images))
        return predict(self, images, *args, greedy=greedy, **kwargs)

    args = [str(checkpoints["hard"]), str(checkpoints["soft"]), "--samples", "1", "4", "--seed", "3", "--root", data]
    done = evaluate(*args, "--json", str(tmp_path / "rows0.json"))
    assert done.returncode == 0, done.stderr
    monkeypatch.setattr(GlimpseModel, "predict_proba", counting)
    assert evaluate_module.main([*args, "--json", str(tmp_path / "rows1.json")]) == 0
    runs = [json.loads((tmp_path / f"rows{n}.json").read_text()) for n in range(2)]
    assert [(r["kind"], r["samples"]) for r in runs[0]] == [("hard", 1), ("hard", 4), ("soft", 1)]
    assert [r["test_error"] for r in runs[0]] == [r["test_error"] for r in runs[1]]
    assert runs[0][0]["test_error_greedy"] == runs[0][1]["test_error_greedy"] is not None
    assert sum(greedy_batches) == 10_000, "one greedy pass over the test set for the one hard checkpoint"


@pytest.mark.slow
def test_validation_split_and_another_std(checkpoints, data, tmp_path, capsys):
    """--split val evaluates the checkpoint's 5,000 validation images, not the test set's 10,000; --std
    changes the hard model's sampled paths but not its greedy one, and leaves soft alone. (In this
    process: a new one per call would only add the imports; the command in a process is tested above.)"""
    from glimpse.evaluate import main

    rows = {}
    for name, extra in (("test", []), ("val", ["--split", "val"]), ("wide", ["--split", "val", "--std", "2"])):
        out = tmp_path / f"{name}.json"
        capsys.readouterr()
        assert main([str(checkpoints["hard"]), str(checkpoints["soft"]), "--samples", "4", "--root", data,
                     "--json", str(out), "--locations", "200", *extra]) == 0
        assert capsys.readouterr().out.startswith("# split: val") == (name != "test")
        rows[name] = json.loads(out.read_text())
    assert [r["images"] for r in rows["test"]] == [10_000, 10_000] and [r["split"] for r in rows["test"]] == ["test"] * 2
    assert [r["images"] for r in rows["val"]] == [5_000, 5_000] and [r["split"] for r in rows["val"]] == ["val"] * 2
    hard, wide = rows["val"][0], rows["wide"][0]
    assert hard["std"] == 0.1 and wide["std"] == 2.0 and rows["wide"][1]["std"] is None
    # (which images were read is the counts above: the two splits' errors may coincide on a weak model)
    assert wide["test_error_greedy"] == hard["test_error_greedy"]
    assert wide["test_error"] != hard["test_error"]
    assert rows["wide"][1]["test_error"] == rows["val"][1]["test_error"]  # soft: no paths to sample
    assert wide["steps"] == hard["steps"]  # --locations follows the greedy path: the same whatever the std
    assert wide["sampled"]["share"] != hard["sampled"]["share"] or wide["sampled"]["error"] != hard["sampled"]["error"]


def test_other_data_set_of_another_size_is_refused(checkpoints, data, capsys):
    from glimpse.evaluate import main
    assert main([str(checkpoints["hard"]), "--dataset", "translated", "--canvas", "60", "--root", data]) == 2
    out, err = capsys.readouterr()
    assert "60x60" not in out and "28x28" in err and "Traceback" not in err


def bad_files(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.uint8).numpy().tobytes())
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    return {
        "missing": (tmp_path / "nothere.ckpt", "no such file"),
        "empty": (empty, "empty file"),
        "truncated": (truncated, "not a readable checkpoint"),
        "random bytes": (noise, "not a readable checkpoint"),
        "not ours": (foreign, "not a glimpse checkpoint"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "random bytes", "not ours", "other kind"])
def test_bad_checkpoints_give_one_line_and_status_2(checkpoints, tmp_path, case, capsys):
    """In this process: the status of the command in a process of its own is test_verbose_shows_the_traceback's."""
    from glimpse.evaluate import main
    good = checkpoints["hard"]
    if case == "other kind":
        path, message, extra = good, "a 'hard' attention checkpoint, but 'soft' was asked for", ["--attention", "soft"]
    else:
        (path, message), extra = bad_files(tmp_path, good)[case], []
    before = hashlib.md5(path.read_bytes()).hexdigest() if path.exists() else None
    capsys.readouterr()
    assert main([str(path), *extra]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], err
    assert (hashlib.md5(path.read_bytes()).hexdigest() if path.exists() else None) == before, "nothing overwritten"


def test_verbose_shows_the_traceback(checkpoints, tmp_path):
    """Once is enough: the same handler serves every bad file (each evaluate call costs ~10 s of imports)."""
    path, _ = bad_files(tmp_path, checkpoints["hard"])["truncated"]
    verbose = evaluate(str(path), "--verbose")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith(f"error: {path}")


def test_train_refuses_a_checkpoint_of_the_other_kind(checkpoints, tmp_path):
    done = subprocess.run([sys.executable, "train.py", "--attention", "soft", "--ckpt_path", str(checkpoints["hard"]),
                           f"--trainer.logger.init_args.save_dir={tmp_path}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "ckpt_path=" in done.stderr and "'soft'" in done.stderr and "'hard'" in done.stderr
    assert not any(tmp_path.iterdir()), "nothing was written"


def test_gradient_noise_terms_per_kind(checkpoints, data):
    from glimpse.gradnoise import measure

    terms = {kind: [r["term"] for r in measure(str(path), 3, 32, data, 0)] for kind, path in checkpoints.items()}
    assert terms == {"hard": ["reinforce, baseline", "reinforce, no baseline"], "soft": ["cross-entropy"],
                     "choice": ["reinforce, baseline", "reinforce, no baseline"]}
    rows = measure(str(checkpoints["soft"]), 3, 32, data, 0)
    scorer = load_model(checkpoints["soft"])[0].net.scorer
    assert rows[0]["parameters"] == sum(p.numel() for p in scorer.parameters())
    assert rows[0]["total_variance"] > 0
    several = measure(str(checkpoints["hard"]), 3, 16, data, 0, paths=3)
    assert [r["term"] for r in several] == ["reinforce, baseline", "reinforce, no baseline", "reinforce, leave-one-out"]
    assert len({r["total_variance"] for r in several}) == 3  # three different estimators of one gradient


@pytest.mark.parametrize("bad", [["--batches", "1"], ["--paths", "0"]])
def test_gradient_noise_refuses_bad_counts(bad, capsys):
    from glimpse.gradnoise import main

    with pytest.raises(SystemExit) as stop:
        main(["missing.ckpt", *bad])
    assert stop.value.code == 2 and f"{bad[0]}={bad[1]}" in capsys.readouterr().err


def test_gradient_noise_names_a_bad_checkpoint_and_writes_no_rows(tmp_path, capsys):
    from glimpse.gradnoise import main

    empty, out = tmp_path / "empty.ckpt", tmp_path / "rows.json"
    empty.touch()
    assert main([str(empty), "--json", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {empty}: empty file, not a checkpoint" and not out.exists()


def test_noise_stats_recover_signal_and_variance():
    from glimpse.gradnoise import noise_stats

    g = torch.tensor([3.0, 4.0]) + 2 * torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    got = noise_stats(g)  # per-coordinate variance 4, so 8 in total; |true|^2 = 25
    assert abs(got["total_variance"] - 8) < 0.5 and abs(got["signal_sq_norm"] - 25) < 0.5
    assert abs(got["batches_for_snr1"] - 8 / 25) < 0.03
    assert noise_stats(torch.randn(50, 3, generator=torch.Generator().manual_seed(1)) * 5)["signal_sq_norm"] < 5


@pytest.mark.parametrize("argv, allowed", [(["x.ckpt", "--samples", "5", "0"], "an integer >= 1"),
                                           (["x.ckpt", "--count", "-1"], "an integer >= 1"),
                                           (["x.ckpt", "--std", "0"], "a number > 0")])
def test_bad_counts_are_refused_before_any_checkpoint_is_read(argv, allowed, capsys):
    from glimpse.evaluate import parse

    with pytest.raises(SystemExit) as stop:
        parse(argv)
    bad = argv[-1]
    assert stop.value.code == 2 and f"={bad} is not allowed: expected {allowed}" in capsys.readouterr().err


def test_unwritable_trajectories_are_refused_before_any_checkpoint_is_read(capsys):
    from glimpse.evaluate import parse

    out = REPO / "train.py" / "looks.png"
    with pytest.raises(SystemExit) as stop:
        parse(["x.ckpt", "--trajectories", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and f"--trajectories='{out}'" in err[0] and "is not a folder" in err[0]

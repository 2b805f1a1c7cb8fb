"""Run records and generated tables: a finished run writes run.json, --add turns it into a checked row of
runs.csv, and the report regenerates (or, with --check, refuses drifted) tables from the rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from glimpse import report
from glimpse.records import COLUMNS, budget_name, kind_arguments, read_rows, seconds
from tests.conftest import REPO

RECIPE = "configs/recipes/mnist.yaml"  # 28x28's pre-registered recipe

TINY = ("--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
        "--trainer.limit_test_batches=2", "--trainer.log_every_n_steps=1", "--model.hidden=32", "--model.what=16",
        "--model.where=16", "--model.glimpse_features=32")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    """One tiny finished hard run: (cli object, its run folder)."""
    from glimpse.cli import main

    root = tmp_path_factory.mktemp("records")
    with mock.patch.object(sys, "argv", ["train.py"]):
        cli = main(args=[f"--data.root={data}", f"--trainer.logger.init_args.save_dir={root / 'runs'}",
                         f"--trainer.default_root_dir={root / 'runs'}", "--trainer.enable_progress_bar=false",
                         "--attention", "hard", "--seed_everything", "7", *TINY])
    return cli, Path(cli.trainer.log_dir)


def test_a_finished_run_writes_its_record(finished):
    cli, run = finished
    summary = json.loads((run / "run.json").read_text())
    metrics = cli.trainer.callback_metrics
    assert summary["setting"] == "mnist" and summary["kind"] == "hard" and summary["seed"] == 7
    assert summary["budget"] == "long" and summary["recipe"] == "configs/recipes/mnist.yaml+configs/default.yaml"
    # one path is hard's greedy path; M = 10 the sampled paths averaged; both from the one test evaluation
    assert summary["test_error_one_path"] == pytest.approx(float(metrics["test/error_greedy"]))
    assert summary["test_error_m10"] == pytest.approx(float(metrics["test/error"]))
    assert summary["val_error"] == pytest.approx(float(cli.trainer.checkpoint_callback.best_model_score))
    assert summary["pixels_per_image_m10"] == 10 * summary["pixels_per_image"] == 10 * 6 * 64
    assert (run / "checkpoints" / summary["best_checkpoint"]).is_file()


def test_the_run_folder_says_what_the_run_is(finished):
    _, run = finished
    assert run.parent.name == "mnist-hard-seed=7-max_epochs=1-hidden=32-what=16-where=16-glimpse_features=32"


def test_tensorboard_hparams_hold_the_real_metrics(finished):
    cli, run = finished
    events = EventAccumulator(str(run))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "hp_metric" not in scalars
    value = events.Scalars("hparams/test_error_one_path")[-1].value
    assert value == pytest.approx(float(cli.trainer.callback_metrics["test/error_greedy"]))


def test_add_records_a_checked_row_and_the_report_renders_it(finished, tmp_path):
    _, run = finished
    records = tmp_path / "runs.csv"
    assert report.main(["--add", str(run), "--records", str(records), "--root", str(tmp_path)]) == 0
    rows = read_rows(records)
    assert len(rows) == 1 and tuple(rows[0]) == COLUMNS and rows[0]["seed"] == "7"
    # adding the same run again replaces its row
    assert report.main(["--add", str(run), "--records", str(records), "--root", str(tmp_path)]) == 0
    assert len(read_rows(records)) == 1
    doc = tmp_path / "README.md"
    doc.write_text("intro\n<!-- report:runs -->\n<!-- /report:runs -->\nend\n")
    assert report.main(["--check", "--records", str(records), "--root", str(tmp_path)]) == 1
    assert report.main(["--records", str(records), "--root", str(tmp_path)]) == 0
    text = doc.read_text()
    assert "| mnist | hard | `configs/recipes/mnist.yaml+configs/default.yaml` | long | 7 |" in text and text.endswith("<!-- /report:runs -->\nend\n")
    assert f"| {report.machines(rows)} | {rows[0]['precision']} |\n" in text, "each run names its machine and precision"
    assert report.main(["--check", "--records", str(records), "--root", str(tmp_path)]) == 0
    doc.write_text(text.replace("| 7 |", "| 8 |"))  # a number edited by hand
    assert report.main(["--check", "--records", str(records), "--root", str(tmp_path)]) == 1


def test_a_summary_that_disagrees_with_its_checkpoint_is_refused(finished, tmp_path, capsys):
    _, run = finished
    forged = tmp_path / "run"
    forged.mkdir()
    (forged / "checkpoints").symlink_to(run / "checkpoints")
    summary = json.loads((run / "run.json").read_text())
    (forged / "run.json").write_text(json.dumps(summary | {"val_error": summary["val_error"] / 2}))
    assert report.main(["--add", str(forged), "--records", str(tmp_path / "runs.csv"), "--root", str(tmp_path)]) == 2
    assert "validation error" in capsys.readouterr().err
    assert report.main(["--add", str(tmp_path), "--records", str(tmp_path / "runs.csv"), "--root", str(tmp_path)]) == 2


def test_equal_time_and_best_tables_average_seeds_and_choose_on_validation():
    base = {c: "" for c in COLUMNS} | {"setting": "mnist", "machine": "m", "epochs": "10", "pixels_per_image": "384"}
    rows = [base | {"kind": "hard", "budget": "equal-15min", "seed": str(s), "test_error_one_path": str(e),
                    "test_error_m10": "0.01", "val_error": "0.02", "recipe": RECIPE} for s, e in ((100, 0.01), (101, 0.03))]
    table = report.equal_time(rows)
    assert "| mnist | 15min | m | hard | 100, 101 | 10.0 | **2.00 ± 1.41** | 1.00 ± 0.00 |" in table
    # at a glance: one row per setting, one column per kind, hard's M = 10 and the pixels beside it
    soft = base | {"kind": "soft", "budget": "equal-15min", "seed": "100", "test_error_one_path": "0.005",
                   "pixels_per_image": "2304", "recipe": RECIPE}
    glance = report.answer([r | {"pixels_per_image_m10": "3840"} for r in rows] + [soft])
    assert "| mnist | 15min | m | **2.00 ± 1.41 (2)** | 1.00 ± 0.00 (2) | **0.50 (1)** | – | – | 384 / 3,840 / 2,304 |" in glance
    # a change to the recipe: beside the recipe's own runs of its seeds, never in the equal-time tables
    change = [r | {"recipe": RECIPE + "+configs/recipes/variants/x.yaml", "val_error": "0.01", "test_error_one_path": "0.05",
                   "seed": "100"} for r in rows[:1]]
    assert report.equal_time(rows + change) == report.equal_time(rows) and report.answer(rows + change) == report.answer(rows)
    screened = report.search(rows + change + [soft])
    assert "| mnist | 15min | m | hard | the recipe as it is | 100 | 10.0 | 2.00 | 1.00 | 1.00 |" in screened  # seed 100 only
    assert "| mnist | 15min | m | hard | + `configs/recipes/variants/x.yaml` | 100 | 10.0 | 1.00 (lowest) | 5.00 | 1.00 |" in screened
    assert "soft" not in screened and report.search(rows) == report.NONE_YET
    # a wall-clock budget buys different work on another processor: its runs are a row of their own,
    # never averaged with the first machine's, and a change is paired with the recipe's run on its machine
    other = [r | {"machine": "Intel(R) Xeon(R) Processor, 1 threads", "test_error_one_path": "0.07"} for r in rows[:1]]
    table = report.equal_time(rows + other)
    assert "| mnist | 15min | m | hard | 100, 101 | 10.0 | **2.00 ± 1.41** |" in table
    assert "| mnist | 15min | Intel Xeon | hard | 100 | 10.0 | **7.00** |" in table
    assert "| mnist | 15min | Intel Xeon | **7.00 (1)** |" in report.answer(rows + other)
    assert "| the recipe as it is | 100 | 10.0 | 2.00 | 1.00 |" in report.search(rows + other + change)  # not 7.00
    # ... and a change tried on both machines is two groups, each judged against its own machine's control
    both = report.search(rows + other + change + [r | {"machine": other[0]["machine"], "val_error": "0.03",
                                                        "test_error_one_path": "0.09"} for r in change])
    assert "| mnist | 15min | m | hard | + `configs/recipes/variants/x.yaml` | 100 | 10.0 | 1.00 (lowest) | 5.00 |" in both
    assert "| mnist | 15min | Intel Xeon | hard | the recipe as it is | 100 | 10.0 | 2.00 (lowest) | 7.00 |" in both
    assert "| mnist | 15min | Intel Xeon | hard | + `configs/recipes/variants/x.yaml` | 100 | 10.0 | 3.00 | 9.00 |" in both
    # a change confirmed at a long budget: beside the recipe's long runs of the same seeds and epochs only
    confirm = [r | {"budget": "long", "epochs": "150", "seed": "200"} for r in rows[:1] + change]
    shorter = rows[1] | {"budget": "long", "epochs": "50", "seed": "200", "val_error": "0.001"}
    confirmed = report.search(rows + change + confirm + [shorter])
    assert "| mnist | 150 epochs | m | hard | the recipe as it is | 200 | 150.0 | 2.00 | 1.00 | 1.00 |" in confirmed
    assert "| mnist | 150 epochs | m | hard | + `configs/recipes/variants/x.yaml` | 200 | 150.0 | 1.00 (lowest) |" in confirmed
    assert "| mnist | 15min | m | hard | the recipe as it is | 100 | 10.0 | 2.00 | 1.00 | 1.00 |" in confirmed
    assert "0.10" not in confirmed  # the 50-epoch run is no control of a 150-epoch change
    # epochs buy the same work on every machine: a long change on another machine keeps its control
    moved = [confirm[0], confirm[1] | {"machine": other[0]["machine"]}]  # the control on m, the change on the Xeon
    assert ("| mnist | 150 epochs | Intel Xeon and m | hard | the recipe as it is | 200 | 150.0 | 2.00 | 1.00 | 1.00 |"
            in report.search(rows + change + moved))
    # best: the recipe with the lower VALIDATION error wins, even though its test error is higher
    long = [base | {"kind": "soft", "budget": "long", "seed": "1", "recipe": name, "val_error": val, "train_minutes": "90.4",
                    "test_error_one_path": test} for name, val, test in (("a", "0.01", "0.05"), ("b", "0.02", "0.01"))]
    assert "| mnist | soft | `a` | 1 | **5.00** | – | 384 | 10 epochs, 90 min (m) |" in report.best(long)
    # the same recipe for more epochs is another option: chosen on its own validation error, not averaged in
    longer = base | {"kind": "soft", "budget": "long", "seed": "2", "recipe": "a", "epochs": "40", "val_error": "0.005",
                     "train_minutes": "360", "test_error_one_path": "0.02"}
    assert "| mnist | soft | `a` | 2 | **2.00** | – | 384 | 40 epochs, 360 min (m) |" in report.best(long + [longer])
    assert "| mnist | soft | `a` | 1 | **5.00** |" in report.best(long + [longer | {"val_error": "0.03"}])


def test_unknown_block_is_refused():
    with pytest.raises(SystemExit, match="unknown block report:nope"):
        report.render("<!-- report:nope -->\n<!-- /report:nope -->", [])


def test_the_documents_match_the_records():
    """What CI checks: the tables of README.md, docs/results.md and docs/runs.md are what docs/runs.csv gives."""
    assert report.main(["--check", "--root", str(REPO)]) == 0


def test_the_experiment_runs_only_what_the_plan_lacks(tmp_path):
    """Every cell of a table trains with its setting's recipe and differs only in kind and seed; a cell
    already recorded at the plan's budget is not run again."""
    from glimpse.experiment import PLAN, commands

    plan = yaml.safe_load(PLAN.read_text())
    todo = commands("equal-time", plan, ["mnist"], None, None, done={("mnist", "hard", "100", RECIPE)})
    cells = [cell for cell, _ in todo]
    assert ("mnist", "hard", "100", RECIPE) not in cells and ("mnist", "hard", "101", RECIPE) in cells
    assert len(cells) == sum(len(s) for s in plan["equal-time"]["seeds"].values()) - 1
    for (setting, kind, seed, _), args in todo:
        rest = " ".join(args).replace(f"-{kind}-s{seed}", "").replace(seed, "SEED")
        rest = rest.replace(" ".join(kind_arguments(kind)), "KIND")
        assert rest == ("--config configs/recipes/mnist.yaml KIND --seed_everything SEED --trainer.max_time "
                        f"{plan['equal-time']['budget']} --trainer.max_epochs -1 --name equal-time-mnist")
        assert (REPO / args[1]).is_file()


def test_a_cell_run_on_another_processor_is_still_to_run_here():
    """A wall-clock budget buys different work on another processor: the table's cell on this machine
    is done only by a run recorded on this processor (any thread count), at the plan's budget."""
    from glimpse.experiment import recorded

    row = {"setting": "mnist", "kind": "hard", "seed": "100", "recipe": RECIPE, "budget": "equal-15min"}
    rows = [{**row, "machine": "AMD EPYC, 1 threads"}, {**row, "seed": "101", "machine": "Intel(R) Xeon(R) Processor, 1 threads"},
            {**row, "seed": "102", "machine": "Intel(R) Xeon(R) Processor, 1 threads", "budget": "long"}]
    assert recorded(rows, "equal-15min", "Intel Xeon") == {("mnist", "hard", "101", RECIPE)}
    assert recorded(rows, "equal-15min", "AMD EPYC") == {("mnist", "hard", "100", RECIPE)}


def test_one_model_name_with_different_vector_units_is_two_machines(tmp_path):
    """Two AMD EPYCs, one with AVX2 only and one with AVX-512 BF16, print the same model name; a wall-clock
    budget buys different work on each, so the record and the cell check name them apart."""
    from glimpse import records
    from glimpse.experiment import recorded

    def on(flags: str) -> str:
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC 9B14 @ 2.6GHz\nflags\t\t: fpu sse2 {flags}\n")
        return records.machine(info)

    avx2, avx512 = on("avx avx2 fma"), on("avx2 avx512f avx512_bf16")
    assert records.cpu(avx2) == "AMD EPYC 9B14 (AVX2)" and records.cpu(avx512) == "AMD EPYC 9B14 (AVX-512 BF16)"
    row = {"setting": "mnist", "kind": "hard", "seed": "100", "recipe": RECIPE, "budget": "equal-15min", "machine": avx512}
    assert recorded([row], "equal-15min", records.cpu(avx2)) == set()
    assert recorded([row], "equal-15min", records.cpu(avx512)) == {("mnist", "hard", "100", RECIPE)}


def test_a_change_to_a_recipe_is_its_own_cell_read_on_top_of_the_recipe():
    """hard-search: each variant's file is read after the setting's recipe, under a name of its own, and
    a recorded run of the recipe as it is does not count as a run of the change."""
    from glimpse.experiment import PLAN, commands

    plan = yaml.safe_load(PLAN.read_text())
    (variant,) = plan["hard-search"]["variants"]
    todo = dict(commands("hard-search", plan, ["mnist"], None, [100], done={("mnist", "hard", "100", RECIPE)}))
    (args,) = todo.values()
    assert list(todo) == [("mnist", "hard", "100", f"{RECIPE}+{variant}")] and (REPO / variant).is_file()
    assert args[:4] == ["--config", RECIPE, "--config", variant] and args[-1] == "hard-search-mnist-hard-policy-hidden-s100"
    assert commands("hard-search", plan, ["mnist"], None, [100], done=set(todo)) == []


def test_a_long_table_trains_its_epochs_without_a_clock_and_only_long_runs_fill_it():
    """soft-long: the recipe unchanged, a number of epochs and no wall-clock limit (so the schedule spans
    the epochs); its cells are filled by long runs only, never by the 15-minute run of the same seed; and
    its seeds were never planned for another table."""
    from glimpse.experiment import PLAN, commands, recorded, table_budget

    plan = yaml.safe_load(PLAN.read_text())
    spec = plan["soft-long"]
    todo = commands("soft-long", plan, None, None, None, done=set())
    assert [c[:2] for c, _ in todo] == [(s, "soft") for s in spec["settings"]] and table_budget(spec) == "long"
    for (setting, _, seed, recipe), args in todo:
        assert recipe == f"configs/recipes/{setting}.yaml" and "--trainer.max_time" not in args
        assert args[args.index("--trainer.max_epochs") + 1] == str(spec["epochs"])
    row = {"setting": "cluttered60", "kind": "soft", "seed": "300", "recipe": "configs/recipes/cluttered60.yaml",
           "machine": "AMD EPYC, 1 threads"}
    assert recorded([{**row, "budget": "equal-15min"}], "long", "AMD EPYC") == set()
    assert recorded([{**row, "budget": "long"}], "long", "AMD EPYC") == {tuple(row[k] for k in ("setting", "kind", "seed", "recipe"))}
    # a number of epochs is the same work on any processor: a long run finished elsewhere fills the cell
    assert recorded([{**row, "budget": "long"}], "long", "Intel Xeon") == {tuple(row[k] for k in ("setting", "kind", "seed", "recipe"))}
    long = {n for n, t in plan.items() if "epochs" in t}
    assert {"soft-long", "kinds-long"} <= long
    for kind, seeds in ((k, v) for n in long for k, v in plan[n]["seeds"].items()):
        # a long run's seed is fresh for its kind: never planned for that kind in another kind of table
        used = {x for n, t in plan.items() if n not in long for x in t["seeds"].get(kind, [])}
        assert not used & set(seeds), kind
    # and a seed runs a kind in one long table only, but for a screen of changes without its own control
    # (no null variant): it reuses its control table's seeds by design, to pair each change with it
    paired = {n for n in long if "variants" in plan[n] and None not in plan[n]["variants"]}
    for kind in {k for n in long for k in plan[n]["seeds"]}:
        planned = [x for n in long - paired for x in plan[n]["seeds"].get(kind, [])]
        assert len(planned) == len(set(planned)), kind


def test_a_confirmation_runs_the_change_and_its_control_on_seeds_no_other_table_uses():
    """confirmation: the change and the recipe as it is (the control), the same fresh seeds and epochs;
    --variants splits the table between two runners so that no cell is picked twice."""
    from glimpse.experiment import PLAN, commands, main

    plan = yaml.safe_load(PLAN.read_text())
    spec = plan["confirmation"]
    seeds = spec["seeds"]["hard"]
    assert not {x for n, t in plan.items() if n != "confirmation" for x in t["seeds"].get("hard", [])} & set(seeds)
    control = commands("confirmation", plan, ["mnist"], None, None, done=set(), variants=["none"])
    change = commands("confirmation", plan, ["mnist"], None, None, done=set(), variants=["policy-hidden"])
    assert [c[3] for c, _ in control] == [RECIPE] * len(seeds)
    assert [c[3] for c, _ in change] == [f"{RECIPE}+configs/recipes/variants/policy-hidden.yaml"] * len(seeds)
    assert {c for c, _ in control + change} == {c for c, _ in commands("confirmation", plan, ["mnist"], None, None, set())}
    for _, args in control + change:
        assert args[args.index("--trainer.max_epochs") + 1] == str(spec["epochs"]) and "--trainer.max_time" not in args
    assert len({args[-1] for _, args in control + change}) == 2 * len(seeds)  # a run folder each
    with pytest.raises(SystemExit):
        main(["confirmation", "--variants", "bogus", "--dry-run"])


def test_budget_names():
    assert budget_name(seconds("00:00:15:00")) == "equal-15min" and budget_name(None) == "long"
    assert budget_name(seconds("00:00:00:06")) == "equal-0.1min"


def test_a_wall_clock_budget_stops_the_run_and_the_schedule_spans_it(cli):
    """The equal-time table: --trainer.max_time stops training (no epoch limit here), and the learning
    rate has annealed to (nearly) zero by then, whatever number of steps fitted in: the assertions hold
    on a machine of any speed, so a slow or shared one does not fail them."""
    run = cli("--attention", "soft", "--trainer.max_time", "00:00:00:04", "--trainer.max_epochs", "-1",
              "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches",
              "2", *TINY[4:])
    lr, steps = run.trainer.optimizers[0].param_groups[0]["lr"], run.trainer.global_step
    assert steps >= 2 and lr < 0.05 * run.model.hparams.lr, (steps, lr)
    summary = json.loads((Path(run.trainer.log_dir) / "run.json").read_text())
    # at least the budget, and not much past it: Lightning checks the clock between steps
    assert summary["budget"] == "equal-0.07min" and 0.06 < summary["train_minutes"] < 0.5, summary


def test_a_recorded_run_keeps_its_validation_curve_beside_its_row(finished, tmp_path):
    """docs/curves.csv holds what TensorBoard logged of the one-path validation error, keyed like the
    row; adding the run again replaces its curve instead of adding a second one."""
    from glimpse.plots import curve
    from glimpse.records import CURVE_TAG, add_runs, curves_path, read_curves

    _, run = finished
    records = tmp_path / "runs.csv"
    (row,) = add_runs(records, [run])
    epochs, values, minutes = curve(run, CURVE_TAG)
    (points,) = read_curves(records).values()
    assert [int(p["epoch"]) for p in points] == epochs and len(epochs) >= 1
    assert [float(p["val_error_one_path"]) for p in points] == pytest.approx(values, rel=1e-5)
    assert [float(p["minutes"]) for p in points] == pytest.approx(minutes, abs=1e-3)
    assert {(p["run"], p["started"]) for p in points} == {(row["run"], row["started"])}
    add_runs(records, [run])
    assert len(read_rows(curves_path(records))) == len(epochs)


def test_figures_are_drawn_from_the_recorded_curves_not_from_run_folders(finished, tmp_path):
    """A run folder does not outlive its machine and its name comes back in a later session: the figure
    is drawn from docs/curves.csv, is the same when the folder is gone, and counts the runs it could not
    draw."""
    import shutil

    from PIL import Image

    from glimpse.records import add_runs, read_curves

    _, run = finished
    copy = tmp_path / "runs" / "equal-time-mnist-hard-s100" / "version_0"
    shutil.copytree(run, copy)
    records = tmp_path / "runs.csv"
    (row,) = add_runs(records, [copy])
    row = {k: str(v) for k, v in row.items()} | {"budget": "equal-15min", "recipe": RECIPE,
                                              "machine": "AMD EPYC 9B14 @ 2.6GHz, 1 threads"}
    unrecorded = row | {"kind": "soft", "started": "2020-01-01T00:00:00Z"}  # recorded before curves were
    curves = read_curves(records)
    (path,) = report.figures([row, unrecorded], curves, tmp_path / "a")
    assert path.name == "equal-time-mnist-amd-epyc-9b14.png" and Image.open(path).size[0] > 300
    shutil.rmtree(copy)
    (again,) = report.figures([row, unrecorded], read_curves(records), tmp_path / "b")
    assert again.read_bytes() == path.read_bytes()
    assert report.figures([unrecorded], curves, tmp_path / "c") == []  # no curve: nothing drawn
    assert report.legend([row, unrecorded], curves) == {"hard": "hard (1 of 1 runs)", "soft": "soft (0 of 1 runs)"}


def test_stacked_changes_are_read_in_order_under_one_name():
    """std-search: a variant may be a list of files (a confirmed change and a screened one on top of it);
    they are read in order after the recipe, and the run folder and --variants name them together."""
    from glimpse.experiment import PLAN, change_name, commands

    plan = yaml.safe_load(PLAN.read_text())
    stacked = [v for v in plan["std-search"]["variants"] if isinstance(v, list)]
    assert stacked and all((REPO / f).is_file() for v in stacked for f in v)
    for variant in stacked:
        name = change_name(variant)
        (((setting, _, seed, recipe), args),) = commands("std-search", plan, None, None, None, set(), [name])
        assert recipe == "+".join([f"configs/recipes/{setting}.yaml", *variant])
        assert [a for a in args[:2 * len(variant) + 2] if a != "--config"] == recipe.split("+")
        assert args[-1] == f"std-search-{setting}-hard-{name}-s{seed}" and "+" in name
    assert change_name(None) == "none" and change_name("a/b.yaml") == "b"


# a hard mnist run of 100 epochs, as the search and best tables read it; a test sets recipe, seed and errors
LONG_RUN = {c: "" for c in COLUMNS} | {"setting": "mnist", "kind": "hard", "machine": "m", "budget": "long", "epochs": "100",
                                      "pixels_per_image": "384", "test_error_one_path": "0.02", "test_error_m10": "0.01"}


def test_a_stacked_change_is_judged_against_what_it_was_added_to_and_the_best_needs_the_most_seeds():
    """std-search: a + b + c stands beside a + b's run of its seed (not the recipe as it is, not a + b's
    three-seed mean); and the best table does not crown a one-seed screen over a three-seed recipe, even
    with a lower validation error, since one draw beside a mean wins by luck as often as by merit."""
    base = LONG_RUN
    hidden = RECIPE + "+configs/recipes/variants/h.yaml"
    confirmed = [base | {"recipe": hidden, "seed": str(s), "val_error": str(v), "test_error_one_path": "0.02"}
                 for s, v in ((210, 0.010), (211, 0.030), (212, 0.030))]
    screen = base | {"recipe": hidden + "+configs/recipes/variants/s.yaml", "seed": "210", "val_error": "0.012",
                     "test_error_one_path": "0.04"}
    table = report.search(confirmed + [screen])
    assert "| + `configs/recipes/variants/h.yaml` | 210 | 100.0 | 1.00 (lowest) | 2.00 | 1.00 |" in table  # its seed only
    assert "| + `configs/recipes/variants/h.yaml+configs/recipes/variants/s.yaml` | 210 | 100.0 | 1.20 | 4.00 |" in table
    assert "| + `configs/recipes/variants/h.yaml` | 210, 211, 212 | 100.0 | 2.33 ± 1.15 (lowest) |" in table  # vs the recipe
    tie = screen | {"recipe": hidden + "+configs/recipes/variants/t.yaml", "val_error": "0.010"}
    assert report.search(confirmed + [screen, tie]).count("| 210 | 100.0 | 1.00 (lowest) |") == 2  # a tie marks both
    chosen = report.best(confirmed + [screen])
    assert f"| mnist | hard | `{hidden}` | 210, 211, 212 | **2.00 ± 0.00** |" in chosen  # 2.33 beside the screen's 1.20
    assert "**4.00**" in report.best(confirmed[:1] + [screen | {"val_error": "0.005"}])  # one seed each: validation decides


def test_changes_on_other_seeds_each_stand_beside_the_control_of_their_own_seeds():
    """std-confirmation beside std-search: a change run on seeds 210 and 211 and another on 210 alone are
    each set beside the control's runs of their own seeds, not one control averaged over both sets."""
    base = LONG_RUN
    hidden = RECIPE + "+configs/recipes/variants/h.yaml"
    control = [base | {"recipe": hidden, "seed": s, "val_error": v} for s, v in (("210", "0.010"), ("211", "0.030"))]
    wide = [base | {"recipe": hidden + "+configs/recipes/variants/s.yaml", "seed": s, "val_error": "0.015"}
            for s in ("210", "211")]
    screen = base | {"recipe": hidden + "+configs/recipes/variants/t.yaml", "seed": "210", "val_error": "0.012"}
    table = report.search(control + wide + [screen])
    assert "| + `configs/recipes/variants/h.yaml` | 210, 211 | 100.0 | 2.00 ± 1.41 |" in table
    assert "| + `configs/recipes/variants/h.yaml+configs/recipes/variants/s.yaml` | 210, 211 | 100.0 | 1.50 ± 0.00 (lowest) |" in table
    assert "| + `configs/recipes/variants/h.yaml` | 210 | 100.0 | 1.00 (lowest) |" in table  # the screen's own seed
    assert "| + `configs/recipes/variants/h.yaml+configs/recipes/variants/t.yaml` | 210 | 100.0 | 1.20 |" in table


def test_selection_sets_the_chosen_validation_error_beside_the_last_ten_and_the_test():
    """The last ten validations by epoch (the curve file need not be in order), differences per run;
    runs with fewer than ten validations, and runs that are not long hard runs, are left out."""
    def curve(row: dict, values: list[float]) -> list[dict]:
        points = [{"run": row["run"], "started": row["started"], "epoch": str(e + 1), "minutes": "1",
                   "val_error_one_path": str(v)} for e, v in enumerate(values)]
        return points[::-1]

    runs = [LONG_RUN | {"run": f"runs/r{s}", "started": "t", "seed": str(s), "val_error": "0.01",
                        "test_error_one_path": t} for s, t in ((1, "0.02"), (2, "0.03"))]
    curves = {("runs/r1", "t"): curve(runs[0], [0.5] * 5 + [0.01] + [0.02] * 9),  # last ten: 0.01 then nine 0.02
              ("runs/r2", "t"): curve(runs[1], [0.5] * 3 + [0.01] + [0.03] * 9)}
    short = LONG_RUN | {"run": "runs/r3", "started": "t", "val_error": "0.01", "test_error_one_path": "0.5"}
    soft = runs[0] | {"run": "runs/r4", "kind": "soft"}
    curves |= {("runs/r3", "t"): curve(short, [0.01] * 9), ("runs/r4", "t"): curves[("runs/r1", "t")]}
    table = report.selection(report.with_late(runs + [short, soft], curves))
    # last-ten means 1.90 and 2.80 %; test minus chosen 1.00 and 2.00; test minus last ten 0.10 and 0.20
    assert "| mnist | 2 | 1.00 ± 0.00 | 2.35 ± 0.64 | 2.50 ± 0.71 | 1.50 ± 0.71 | 0.15 ± 0.07 |" in table, table
    assert report.selection(report.with_late([short], curves)) == report.NONE_YET
    # the search table shows the last-ten mean beside each option, '–' where one of its runs has no curve
    runs = [r | {"recipe": "configs/recipes/mnist.yaml"} for r in runs]
    screened = [r | {"run": r["run"] + "v", "recipe": r["recipe"] + "+configs/recipes/variants/v.yaml"} for r in runs]
    both = curves | {("runs/r1v", "t"): curves[("runs/r1", "t")], ("runs/r2v", "t"): curves[("runs/r2", "t")]}
    rows = report.search(report.with_late(runs + screened, both)).splitlines()
    assert [r.rsplit("|", 2)[1].strip() for r in rows if "| mnist |" in r] == ["2.35 ± 0.64"] * 2, rows
    del both[("runs/r2v", "t")]
    rows = report.search(report.with_late(runs + screened, both)).splitlines()
    assert [r.rsplit("|", 2)[1].strip() for r in rows if "| mnist |" in r] == ["2.35 ± 0.64", "–"], rows


def test_a_stopped_run_of_the_plan_resumes_and_a_finished_one_does_not(tmp_path, monkeypatch, capsys):
    """The runner, started again after a kill, continues the cell's newest run folder from its last
    checkpoint; a folder that finished (run.json) or never saved a checkpoint starts afresh."""
    from glimpse import experiment

    name = "std-confirmation-translated60-hard-policy-hidden-s221"
    stopped = tmp_path / "runs" / name / "version_0" / "checkpoints"
    stopped.mkdir(parents=True)
    assert experiment.resume_arguments(tmp_path / "runs", name) == []  # no checkpoint yet
    (stopped / "last.ckpt").write_bytes(b"x")
    assert experiment.resume_arguments(tmp_path / "runs", name) == ["--ckpt_path", str(stopped / "last.ckpt")]
    monkeypatch.setattr(experiment, "ROOT", tmp_path)
    records = tmp_path / "runs.csv"
    assert experiment.main(["std-confirmation", "--variants", "policy-hidden", "--seeds", "221", "--dry-run",
                            "--records", str(records)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"--name {name} --ckpt_path {stopped / 'last.ckpt'}")
    (stopped.parent / "run.json").write_text("{}")
    assert experiment.resume_arguments(tmp_path / "runs", name) == []
    later = tmp_path / "runs" / name / "version_10" / "checkpoints"  # newest by number, not by name
    later.mkdir(parents=True)
    (later / "last.ckpt").write_bytes(b"x")
    (tmp_path / "runs" / name / "version_9" / "checkpoints").mkdir(parents=True)
    assert experiment.resume_arguments(tmp_path / "runs", name) == ["--ckpt_path", str(later / "last.ckpt")]


def test_the_runner_records_the_folder_the_run_wrote_and_never_an_older_one(tmp_path, monkeypatch, capsys):
    """After train.py exits, the runner records the cell's newest run folder; where that folder holds no
    run.json, it stops with an error instead of recording an older finished folder of the same name a
    second time."""
    from glimpse import experiment

    name = "std-confirmation-translated60-hard-policy-hidden-s221"
    older = tmp_path / "runs" / name / "version_0"
    older.mkdir(parents=True)
    (older / "run.json").write_text("{}")
    written, added = [], []

    def train(train_args, env):  # stands in for train.py: writes version_1, with or without its summary
        folder = tmp_path / "runs" / name / "version_1"
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        if written:
            (folder / "run.json").write_text("{}")
        return 0

    monkeypatch.setattr(experiment, "ROOT", tmp_path)
    monkeypatch.setattr(experiment, "train", train)
    monkeypatch.setattr(experiment, "add_runs", lambda records, folders: added.extend(folders))
    argv = ["std-confirmation", "--variants", "policy-hidden", "--seeds", "221", "--records", str(tmp_path / "r.csv")]
    assert experiment.main(argv) == 1 and added == []
    assert "holds no run.json; not recorded" in capsys.readouterr().err
    written.append(True)
    assert experiment.main(argv) == 0 and added == [tmp_path / "runs" / name / "version_1"]


def test_a_long_cell_can_take_more_threads_and_a_wall_clock_cell_cannot(tmp_path, monkeypatch, capsys):
    """--threads sets the runs' OMP_NUM_THREADS for a table of epochs (the same work at any thread
    count); a wall-clock table refuses it before anything runs, naming the value."""
    from glimpse import experiment

    seen = []

    def train(train_args, env):
        seen.append(env["OMP_NUM_THREADS"])
        return 1  # fails at once: the runner stops after one cell

    monkeypatch.setattr(experiment, "ROOT", tmp_path)
    monkeypatch.setattr(experiment, "train", train)
    records = ["--records", str(tmp_path / "r.csv")]
    assert experiment.main(["canvas-confirmation", "--seeds", "320", *records]) == 1 and seen == ["1"]
    assert experiment.main(["canvas-confirmation", "--seeds", "320", "--threads", "2", *records]) == 1 and seen == ["1", "2"]
    for table, threads in (("equal-time", "2"), ("canvas-confirmation", "0")):
        with pytest.raises(SystemExit):
            experiment.main([table, "--threads", threads, *records])
        assert f"--threads {threads} is not allowed for {table}" in capsys.readouterr().err
    assert seen == ["1", "2"]

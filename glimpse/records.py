"""Run records: what a finished run leaves in its folder (``run.json``) and its row of ``docs/runs.csv``.

Why a file per run and a CSV: tables in the README and docs are generated from records, never typed,
so every number a reader sees can be traced to a run folder, a commit, a machine and a seed. The
training command writes ``run.json`` when it finishes (after its one test-set evaluation);
``python -m glimpse.report --add RUN_DIR`` turns it into a row, checked against the run's
best-on-validation checkpoint.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import platform
import re
import subprocess
from pathlib import Path

SUMMARY = "run.json"
SETTINGS = ("mnist", "translated60", "cluttered60", "cluttered100")


def recipe_file(setting: str) -> str:
    """A setting's pre-registered recipe, as the ``recipe`` column names it; changes follow it, "+"-joined."""
    return f"configs/recipes/{setting}.yaml"

# The columns of docs/runs.csv, in order. One path is the primary measure: hard's greedy path (the
# policy mean), choice's argmax location, soft's one pass; M = 10 sampled paths averaged beside it.
COLUMNS = ("run", "started", "setting", "kind", "recipe", "budget", "seed", "epochs", "train_minutes", "machine", "commit",
           "precision", "val_error", "test_error_one_path", "test_error_m10", "pixels_per_image",
           "pixels_per_image_m10")
# The columns of docs/curves.csv, beside it: each recorded run's one-path validation error at every
# validation, against the minutes since the run's first log. Why a file: a run folder does not outlive
# its machine, and a folder name comes back in a later session, so a figure drawn from folders loses
# runs or draws another run's curve; one drawn from these rows is the same on any machine.
CURVE_COLUMNS = ("run", "started", "epoch", "minutes", "val_error_one_path")
CURVE_TAG = "val/error_one_path"


def setting_name(dataset: str, canvas: int) -> str:
    """"mnist", or the data set and its canvas side: "cluttered60"."""
    return dataset if dataset == "mnist" else f"{dataset}{canvas}"


def kind_name(attention: str, estimator: str) -> str:
    """The kind as tables name it: choice is two kinds, one per estimator."""
    return f"choice-{estimator}" if attention == "choice" else attention


def kind_arguments(kind: str) -> list[str]:
    """The training arguments that make a run of this kind (the inverse of ``kind_name``)."""
    attention, _, estimator = kind.partition("-")
    return ["--attention", attention] + (["--model.estimator", estimator] if estimator else [])


# The budget of a run given a number of epochs, not a wall-clock limit: the same work on any machine.
LONG = "long"


def budget_name(max_time_seconds: float | None) -> str:
    """"equal-<N>min" for a run given a wall-clock budget (the equal-time table), else LONG."""
    return LONG if max_time_seconds is None else f"equal-{round(max_time_seconds / 60, 2):g}min"


def seconds(duration: str) -> float:
    """Lightning's DD:HH:MM:SS duration in seconds."""
    return sum(int(part) * unit for part, unit in zip(duration.split(":"), (86400, 3600, 60, 1)))


# The widest vector instructions torch's kernels use, widest first: one model name covers processors
# with and without them (an AMD EPYC with AVX2 only, one with AVX-512 BF16), and a wall-clock budget
# buys different work on each, so the record names them apart.
VECTOR_UNITS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def vector_unit(flags: set[str]) -> str:
    """The widest of ``VECTOR_UNITS`` among a processor's /proc/cpuinfo flags; "" when none is there."""
    return next((name for flag, name in VECTOR_UNITS if flag in flags), "")


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor with its widest vector unit (and the GPU, where one is used) and the threads torch
    computes with: "AMD EPYC (AVX2), 1 threads"."""
    import torch

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    unit = vector_unit(flags)
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}{f' ({unit})' if unit else ''}, {torch.get_num_threads()} threads{gpu}"


def cpu(machine: str) -> str:
    """A machine's processor, short: "Intel(R) Xeon(R) Processor (AMX), 1 threads" -> "Intel Xeon (AMX)"."""
    name = re.sub(r" @ \S+", "", machine.split(",", 1)[0])  # no clock speed
    for mark in ("(R)", "(TM)", " Processor", " CPU"):
        name = name.replace(mark, "")
    return " ".join(name.split())


CODE = ("glimpse", "configs", "train.py", "pyproject.toml")  # what a run's result depends on; not the docs it updates


def commit(repo: Path | None = None) -> str:
    """The checked-out commit, with "-dirty" when tracked code or configs differ from it (documents
    regenerated by the records tool while runs go on do not count); "unknown" outside git."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def write_summary(run_dir: Path, summary: dict) -> Path:
    """Write ``run.json`` atomically (a crash leaves the old file or none, never half of one)."""
    path = Path(run_dir) / SUMMARY
    tmp = path.with_name(f".{SUMMARY}.tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_rows(csv_path: Path) -> list[dict]:
    """The rows of a runs.csv (none if the file does not exist yet)."""
    if not Path(csv_path).exists():
        return []
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(csv_path: Path, rows: list[dict]) -> None:
    """Rows sorted by setting, kind, budget and seed, so the file diffs cleanly as runs are added."""
    order = {s: i for i, s in enumerate(SETTINGS)}
    rows = sorted(rows, key=lambda r: (order.get(r["setting"], 99), r["kind"], r["budget"], r["recipe"],
                                       int(r["seed"]), r["run"], r["started"]))
    write_csv(Path(csv_path), COLUMNS, rows)


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """Write rows atomically (a crash leaves the old file, never half of one), in the order given."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in columns} for r in rows)
    os.replace(tmp, path)


def row_from_run(run_dir: Path) -> dict:
    """The CSV row of a finished run, from its ``run.json``, checked against its best checkpoint.

    Refuses (``ValueError``, one line) a folder without a summary (an unfinished run) or whose best
    checkpoint is missing or does not hold the validation error the summary claims.
    """
    from glimpse.checkpoints import read_checkpoint

    run_dir = Path(run_dir)
    path = run_dir / SUMMARY
    if not path.is_file():
        raise ValueError(f"{run_dir}: no {SUMMARY}: not a finished run (the training command writes it at the end)")
    summary = json.loads(path.read_text())
    best = run_dir / "checkpoints" / summary["best_checkpoint"]
    ckpt = read_checkpoint(best)
    score = next((s["best_model_score"] for s in ckpt.get("callbacks", {}).values()  # the callback that chose it
                  if isinstance(s, dict) and str(s.get("best_model_path", "")).endswith(best.name)), None)
    if score is None or abs(float(score) - summary["val_error"]) > 1e-6:
        raise ValueError(f"{best}: its validation error {score} is not the summary's {summary['val_error']}")
    row = {k: summary.get(k, "") for k in COLUMNS} | {"run": summary["run"]}
    minutes = training_minutes(run_dir / "checkpoints" / "last.ckpt")
    if minutes is not None:
        row["train_minutes"] = minutes
    return row


def training_minutes(last: Path) -> float | None:
    """Minutes of training (validation included) as the run's own Timer had counted them when it saved
    its last checkpoint; None without one. Why not the clock at the end of the command: testing the
    best checkpoint restores that checkpoint's Timer too, which once inflated the figure."""
    from glimpse.checkpoints import read_checkpoint

    if not last.is_file():
        return None
    timer = read_checkpoint(last).get("callbacks", {}).get("Timer")
    return None if not timer else round(timer["time_elapsed"]["train"] / 60, 2)


def run_key(row: dict) -> tuple[str, str]:
    """What identifies a recorded run: its folder and its start time (a folder name comes back in a
    later session)."""
    return row["run"], row["started"]


def curves_path(csv_path: Path) -> Path:
    """The curves file that belongs to a runs.csv: curves.csv in the same folder."""
    return Path(csv_path).with_name("curves.csv")


def curve_rows(run_dir: Path, row: dict) -> list[dict]:
    """The curve rows of one run, read from its TensorBoard log; none for a run that never validated."""
    from glimpse.checks import ConfigError
    from glimpse.plots import curve

    try:
        epochs, values, minutes = curve(Path(run_dir), CURVE_TAG)
    except ConfigError:
        return []
    return [{"run": row["run"], "started": row["started"], "epoch": str(e), "minutes": f"{m:.3f}",
             "val_error_one_path": f"{v:.6g}"} for e, v, m in zip(epochs, values, minutes)]


def read_curves(csv_path: Path) -> dict[tuple[str, str], list[dict]]:
    """The curves of a runs.csv, by (run, started): the key of its rows."""
    out: dict[tuple[str, str], list[dict]] = {}
    for r in read_rows(curves_path(csv_path)):
        out.setdefault(run_key(r), []).append(r)
    return out


def add_runs(csv_path: Path, run_dirs: list[Path]) -> list[dict]:
    """Add (or replace, by run folder and start time) the rows of these runs and their curves; returns
    the new rows.

    Holds a lock on the file while it reads and rewrites both files: two runners, one per core, may
    finish at the same moment."""
    new = [row_from_run(d) for d in run_dirs]
    new_curves = {run_key(row): curve_rows(d, row) for d, row in zip(run_dirs, new)}
    with open(Path(csv_path).with_suffix(".csv.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = {run_key(r): r for r in read_rows(csv_path)}
        for row in new:
            rows[run_key(row)] = {k: "" if row[k] is None else str(row[k]) for k in COLUMNS}
        write_rows(csv_path, list(rows.values()))
        curves = read_curves(csv_path) | new_curves
        write_csv(curves_path(csv_path), CURVE_COLUMNS, [r for run in sorted(curves) for r in curves[run]])
    return new

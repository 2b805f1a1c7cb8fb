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
import subprocess
from pathlib import Path

SUMMARY = "run.json"
SETTINGS = ("mnist", "translated60", "cluttered60", "cluttered100")
# The columns of docs/runs.csv, in order. One path is the primary measure: hard's greedy path (the
# policy mean), choice's argmax location, soft's one pass; M = 10 sampled paths averaged beside it.
COLUMNS = ("run", "started", "setting", "kind", "recipe", "budget", "seed", "epochs", "train_minutes", "machine", "commit",
           "precision", "val_error", "test_error_one_path", "test_error_m10", "pixels_per_image",
           "pixels_per_image_m10")


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


def budget_name(max_time_seconds: float | None) -> str:
    """"equal-<N>min" for a run given a wall-clock budget (the equal-time table), else "long"."""
    return "long" if max_time_seconds is None else f"equal-{round(max_time_seconds / 60, 2):g}min"


def seconds(duration: str) -> float:
    """Lightning's DD:HH:MM:SS duration in seconds."""
    return sum(int(part) * unit for part, unit in zip(duration.split(":"), (86400, 3600, 60, 1)))


def machine() -> str:
    """The processor (and GPU, where one is used) and the threads torch computes with."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} threads{gpu}"


def commit(repo: Path | None = None) -> str:
    """The checked-out commit, with "-dirty" when tracked files differ from it; "unknown" outside git."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
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
    tmp = Path(csv_path).with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in COLUMNS} for r in rows)
    os.replace(tmp, csv_path)


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


def add_runs(csv_path: Path, run_dirs: list[Path]) -> list[dict]:
    """Add (or replace, by run folder and start time) the rows of these runs; returns the new rows.

    Holds a lock on the file while it reads and rewrites it: two runners, one per core, may finish
    at the same moment."""
    key = lambda r: (r["run"], r["started"])  # noqa: E731  a folder name can come back in a later session
    new = [row_from_run(d) for d in run_dirs]
    with open(Path(csv_path).with_suffix(".csv.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = {key(r): r for r in read_rows(csv_path)}
        for row in new:
            rows[key(row)] = {k: "" if row[k] is None else str(row[k]) for k in COLUMNS}
        write_rows(csv_path, list(rows.values()))
    return new

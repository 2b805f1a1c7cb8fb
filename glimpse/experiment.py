"""Run the pre-registered comparison: each missing (setting, kind, seed) of a table in
configs/recipes/plan.yaml, one after another, each recorded in docs/runs.csv as it finishes.

    python -m glimpse.experiment equal-time --dry-run                 # the commands, nothing run
    python -m glimpse.experiment equal-time --settings mnist --kinds hard soft --seeds 100
    OMP_NUM_THREADS=1 taskset -c 1 python -m glimpse.experiment equal-time --settings mnist --seeds 101 &

Why a runner: the plan (recipes, seeds, budget) is committed before any run, and a table cell is
"this recipe, this kind, this seed, this budget"; typing the commands by hand is where a cell
quietly differs from its neighbours. Runs of one table differ only in the kind's arguments and the
seed. Two runners on a 2-core machine: give each one core (``taskset``) and one thread; a long cell
that one core cannot finish in a sitting can take both (``--threads 2``, tables of epochs only). A runner
stopped mid-run and started again resumes that run from its last epoch, in its own folder.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from glimpse.records import LONG, SUMMARY, add_runs, budget_name, cpu, kind_arguments, machine, read_rows, recipe_file, seconds

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "configs" / "recipes" / "plan.yaml"


def variant_files(variant: str | list[str] | None) -> list[str]:
    """A table's variant as config files, read in order on top of the setting's recipe: one file, a list
    of files (changes stacked, e.g. a confirmed change and one screened on top of it), or none."""
    return [] if variant is None else [variant] if isinstance(variant, str) else list(variant)


def change_name(variant: str | list[str] | None) -> str:
    """What --variants calls a table's variant: its files' stems joined by "+", or ``none`` for the recipe
    as it is."""
    return "+".join(Path(f).stem for f in variant_files(variant)) or "none"


def commands(table: str, plan: dict, settings: list[str] | None, kinds: list[str] | None,
             seeds: list[int] | None, done: set[tuple],
             variants: list[str] | None = None) -> list[tuple[tuple, list[str]]]:
    """(cell, train.py arguments) of every planned run not yet recorded, in plan order. A cell is
    (setting, kind, seed, recipe); the recipe is the setting's file, plus a variant's file on top
    where the table lists ``variants`` (changes to a recipe, screened against the recipe itself; a
    ``null`` variant is the recipe as it is, the control). ``variants`` picks some by change_name, so
    two runners on two cores never pick the same cell."""
    spec = plan[table]
    out = []
    for setting in settings or spec["settings"]:
        for variant in spec.get("variants", [None]):
            if variants and change_name(variant) not in variants:
                continue
            configs = [recipe_file(setting), *variant_files(variant)]
            change = f"-{change_name(variant)}" if variant else ""
            for kind, planned in spec["seeds"].items():
                if kinds and kind not in kinds:
                    continue
                for seed in planned:
                    if seeds and seed not in seeds:
                        continue
                    cell = (setting, kind, str(seed), "+".join(configs))
                    if cell in done:
                        continue
                    args = [*(arg for c in configs for arg in ("--config", c)), *kind_arguments(kind),
                            "--seed_everything", str(seed), *budget_arguments(spec),
                            "--name", f"{table}-{setting}-{kind}{change}-s{seed}"]
                    out.append((cell, args))
    return out


def budget_arguments(spec: dict) -> list[str]:
    """A table's budget as train.py arguments: a wall-clock ``budget`` (the epochs that fit, the schedule
    spanning it) or a number of ``epochs`` (a long run, where time is not the limit)."""
    if "budget" in spec:
        return ["--trainer.max_time", spec["budget"], "--trainer.max_epochs", "-1"]
    return ["--trainer.max_epochs", str(spec["epochs"])]


def table_budget(spec: dict) -> str:
    """The ``budget`` column of a table's rows (records.budget_name)."""
    return budget_name(seconds(spec["budget"]) if "budget" in spec else None)


def recorded(rows: list[dict], budget: str, processor: str) -> set[tuple]:
    """The cells already run at this budget: on this processor for a wall-clock budget, which buys
    different work on another processor, so a run there does not fill this machine's cell of the table;
    on any processor for a number of epochs, the same work anywhere, so a long cell finished on another
    machine is not run (and recorded) a second time with the same seed."""
    return {(r["setting"], r["kind"], r["seed"], r["recipe"]) for r in rows
            if r["budget"] == budget and (budget == LONG or cpu(r["machine"]) == processor)}


def newest_run(runs: Path, name: str) -> Path | None:
    """The newest run folder of a name (``version_N``, by N, as train.py numbers them): the one a
    stopped runner resumes, and the one a run that just finished wrote into."""
    versions = [p for p in (runs / name).glob("version_*") if re.fullmatch(r"version_\d+", p.name)]
    return max(versions, key=lambda p: int(p.name.removeprefix("version_")), default=None)


def resume_arguments(runs: Path, name: str) -> list[str]:
    """``--ckpt_path`` that folder's ``last.ckpt`` when the newest run folder of this name was stopped
    before it finished (a ``last.ckpt``, no ``run.json``): a runner killed at the end of a session goes
    on where it stopped, in the same folder, instead of training the cell again from epoch 1 in a new
    one. The path, not ``last``: ``last`` is the newest checkpoint of any of the name's folders."""
    newest = newest_run(runs, name)
    if newest and (newest / "checkpoints" / "last.ckpt").is_file() and not (newest / SUMMARY).exists():
        return ["--ckpt_path", str(newest / "checkpoints" / "last.ckpt")]
    return []


def train(train_args: list[str], env: dict[str, str]) -> int:
    """One cell: train.py in its own process (a fresh seed and thread count each), its exit code."""
    return subprocess.run([sys.executable, "train.py", *train_args], cwd=ROOT, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glimpse.experiment", description=__doc__.splitlines()[0])
    parser.add_argument("table", help="a table of the plan, e.g. equal-time")
    parser.add_argument("--settings", nargs="+", help="only these settings (default: the plan's)")
    parser.add_argument("--kinds", nargs="+", help="only these kinds (default: the plan's)")
    parser.add_argument("--seeds", nargs="+", type=int, help="only these of the plan's seeds")
    parser.add_argument("--variants", nargs="+", help="only these of the table's variants (a file's stem; none: the recipe as it is)")
    parser.add_argument("--plan", type=Path, default=PLAN)
    parser.add_argument("--records", type=Path, default=ROOT / "docs" / "runs.csv")
    parser.add_argument("--threads", type=int, help="threads per run instead of the plan's; a table of epochs only")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    plan = yaml.safe_load(args.plan.read_text())
    tables = [k for k, v in plan.items() if "seeds" in v and ("budget" in v or "epochs" in v)]
    if args.table not in tables:
        parser.error(f"table={args.table!r} is not allowed: expected one of {', '.join(tables)}")
    spec = plan[args.table]
    for name, given, allowed in (("settings", args.settings, spec["settings"]), ("kinds", args.kinds, list(spec["seeds"])),
                                 ("variants", args.variants, [change_name(v) for v in spec.get("variants", [None])])):
        for value in given or []:
            if value not in allowed:
                parser.error(f"--{name} {value} is not allowed: expected one of {', '.join(allowed)}")
    if args.threads is not None and ("budget" in spec or args.threads < 1):
        # a wall-clock budget buys other work at another thread count; a number of epochs is the same work
        parser.error(f"--threads {args.threads} is not allowed for {args.table}: expected a count >= 1, "
                     "and a table with a number of epochs (a wall-clock table runs at the plan's threads)")
    done = recorded(read_rows(args.records), table_budget(spec), cpu(machine()))
    todo = commands(args.table, plan, args.settings, args.kinds, args.seeds, done, args.variants)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or spec.get("threads", 1))}
    for cell, train_args in todo:
        name = train_args[train_args.index("--name") + 1]
        train_args = [*train_args, *resume_arguments(ROOT / "runs", name)]
        print("python train.py " + " ".join(train_args), flush=True)
        if args.dry_run:
            continue
        code = train(train_args, env)
        if code != 0:
            print(f"error: {' '.join(cell)} failed (exit {code}); later cells not run", file=sys.stderr)
            return 1
        folder = newest_run(ROOT / "runs", name)
        if folder is None or not (folder / SUMMARY).is_file():
            # never an older finished folder of the name: that would record one run twice
            print(f"error: {' '.join(cell)} exited 0 but {folder} holds no {SUMMARY}; not recorded", file=sys.stderr)
            return 1
        add_runs(args.records, [folder])
        print(f"recorded {' '.join(cell)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

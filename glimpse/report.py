"""Tables and figures of the README and docs, generated from the run records.

    python -m glimpse.report --add runs/mnist-hard/version_0   # record a finished run in docs/runs.csv
    python -m glimpse.report                                   # rewrite every generated block
    python -m glimpse.report --check                           # exit 1 when a block differs from the records
    python -m glimpse.report --figures                         # validation error against minutes, per setting

A generated block sits between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->`` in README.md,
docs/results.md or docs/runs.md; everything between the two lines belongs to this command. Why: a number typed
by hand drifts from the run it came from; a number generated from docs/runs.csv cannot, and
``--check`` (run by the test suite) says when a document was edited by hand or the records changed.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from glimpse.cli import DEFAULT_CONFIGS
from glimpse.records import LONG, SETTINGS, add_runs, cpu, read_curves, read_rows, recipe_file, run_key

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/results.md", "docs/runs.md")
# Test error (%) of Mnih et al. 2014 (final version; 100x100 as commonly reported), and the best public
# figures, all with several sampled paths averaged (docs/results.md, "Accuracy against the paper").
PAPER = {"mnist": 1.12, "translated60": 1.20, "cluttered60": 4.04, "cluttered100": 8.11}
BEST_PUBLIC_M10 = {"mnist": 0.67, "translated60": 1.22, "cluttered60": 2.63, "cluttered100": 5.9}
KIND_ORDER = ("hard", "soft", "choice-gumbel", "choice-reinforce")
BLOCK = re.compile(r"(<!-- report:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)
DEFAULT_RECIPE = "+".join(DEFAULT_CONFIGS)  # what train.py trains when given no --config
NONE_YET = "_No run of this table is recorded in docs/runs.csv yet._\n"
ONE_MACHINE = ("A row holds the runs of one machine: a wall-clock budget buys different work on different "
               "processors, so kinds compare within a row.")


def percent(values: list[float]) -> str:
    """Errors as per cent: one value as it is, several as mean ± standard deviation."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def numbers(rows: list[dict], column: str) -> list[float]:
    return [float(r[column]) for r in rows if r.get(column) not in (None, "")]


def groups(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Rows grouped by the values of ``keys``, groups in the order settings and kinds are read in."""
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    rank = {"setting": {s: i for i, s in enumerate(SETTINGS)}, "kind": {k: i for i, k in enumerate(KIND_ORDER)}}
    return dict(sorted(out.items(), key=lambda kv: [rank.get(k, {}).get(v, 99) if k in rank else str(v)
                                                  for k, v in zip(keys, kv[0])]))


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]) + "\n"


def seeds(rows: list[dict]) -> str:
    return ", ".join(sorted({r["seed"] for r in rows}, key=int))


def pixels(rows: list[dict], column: str) -> str:
    values = {r[column] for r in rows if r.get(column)}
    return ", ".join(f"{int(float(v)):,}" for v in sorted(values, key=float)) or "–"


def machines(rows: list[dict]) -> str:
    """The machines of these rows, once each, in words ("1 threads" as records spell it reads "1 thread")."""
    return "; ".join(sorted({r["machine"].replace(", 1 threads", ", 1 thread") for r in rows}))


def plain(row: dict) -> bool:
    """Whether a run trained with its setting's recipe as pre-registered, nothing on top."""
    return row["recipe"] == recipe_file(row["setting"])


def equal_rows(rows: list[dict]) -> list[dict]:
    """The equal-time table's runs: a wall-clock budget and the setting's recipe unchanged."""
    return [r for r in rows if r["budget"].startswith("equal-") and plain(r)]


def equal_time(rows: list[dict]) -> str:
    rows = equal_rows(rows)
    if not rows:
        return NONE_YET
    body = []
    for (setting, budget, machine, kind), rs in groups(rows, "setting", "budget", "machine", "kind").items():
        body.append([setting, budget.removeprefix("equal-"), cpu(machine), kind, seeds(rs), f"{statistics.mean(numbers(rs, 'epochs')):.1f}",
                     f"**{percent(numbers(rs, 'test_error_one_path'))}**", percent(numbers(rs, "test_error_m10")),
                     pixels(rs, "pixels_per_image"), pixels(rs, "pixels_per_image_m10"),
                     percent(numbers(rs, "val_error"))])
    header = ["setting", "budget", "machine", "kind", "seeds", "epochs", "test error %, one path", "test error %, M = 10",
              "pixels / image, one path", "pixels / image, M = 10", "best val error %"]
    return markdown(header, body) + f"\n{ONE_MACHINE} Machines: {machines(rows)}. Recipes: `configs/recipes/<setting>.yaml`.\n"


def answer(rows: list[dict]) -> str:
    """The equal-time table at a glance: one row per setting, budget and machine, one column per kind, the
    one-path test error (the primary measure) as mean ± sd over seeds, and hard's M = 10 error beside
    it with the pixels each reads. The full table, with every column, is ``equal_time``. A budget of
    wall-clock time buys different work on different processors, so runs on different machines are
    never averaged together: each machine is a row of its own."""
    rows = equal_rows(rows)
    if not rows:
        return NONE_YET
    body = []
    for (setting, budget, machine), rs in groups(rows, "setting", "budget", "machine").items():
        by_kind = {k[0]: g for k, g in groups(rs, "kind").items()}

        def cell(kind: str, column: str = "test_error_one_path", bold: str = "**") -> str:
            values = numbers(by_kind.get(kind, []), column)
            return f"{bold}{percent(values)} ({len(values)}){bold}" if values else "–"

        hard, other = by_kind.get("hard", []), next((g for k, g in by_kind.items() if k != "hard"), [])
        body.append([setting, budget.removeprefix("equal-"), cpu(machine), cell("hard"), cell("hard", "test_error_m10", bold=""),
                     *(cell(kind) for kind in KIND_ORDER[1:]),
                     f"{pixels(hard, 'pixels_per_image')} / {pixels(hard, 'pixels_per_image_m10')} / "
                     f"{pixels(other, 'pixels_per_image')}"])
    header = ["setting", "budget", "machine", "hard, one path", "hard, M = 10", *KIND_ORDER[1:],
              "pixels / image: hard, hard M = 10, the others"]
    return markdown(header, body) + ("\nTest error %, mean ± sd over seeds (how many in brackets); one path: "
                                     f"hard's greedy path, choice's most likely cell, soft's one pass. {ONE_MACHINE} "
                                     f"Machines: {machines(rows)}.\n")


def span(row: dict) -> str:
    """What a run's budget bought, as the search table names it: a wall-clock budget, or a long run's epochs."""
    return row["budget"].removeprefix("equal-") if row["budget"] != LONG else f"{float(row['epochs']):.0f} epochs"


def control_of(recipe: str) -> str:
    """What a change is screened against: its recipe without the last file read on top. For one change
    that is the setting's recipe as it is; for a change stacked on an earlier one (``a+b+c``), the recipe
    with the earlier change (``a+b``), so a screen is judged against what it was added to."""
    return recipe.rsplit("+", 1)[0]


def search(rows: list[dict]) -> str:
    """Changes to a recipe (a variant's file on top of it), each beside its control (control_of): the same
    setting, kind and budget (a wall-clock budget, or a long run's epochs), the control's runs of the
    changes' seeds only, so the comparison is paired. Judged on the mean validation error, which the
    table marks; the test errors are each run's one evaluation, shown, never chosen on. The mean of
    each run's last ten validations (``LATE``) stands in the last column: unlike the chosen
    checkpoint's error it is not the lowest of many, so it is the fairer judge of a small lead. The epochs say
    what a wall-clock budget bought: a control run in another session on the same processor can have
    bought more or fewer. Under a wall-clock budget each machine is a group of its own, as in the
    equal-time table: its budget buys other work, so its runs are never averaged with another machine's.
    A budget of epochs buys the same work on every machine, so there a change is paired with the
    control's run of the same seed wherever each ran."""
    tried = [r for r in rows if "/variants/" in r["recipe"]]
    if not tried:
        return NONE_YET

    def keyed(rs: list[dict]) -> list[dict]:
        return [r | {"span": span(r), "where": r["machine"] if r["budget"] != LONG else "",
                     "control": control_of(r["recipe"])} for r in rs]

    def late(g: list[dict]) -> str:  # only where every run of the option has its curve: a part is another mean
        return percent(numbers(g, LATE)) if g and len(numbers(g, LATE)) == len(g) else "–"

    def named(recipe: str, setting: str) -> str:
        return "the recipe as it is" if recipe == recipe_file(setting) else "+ `" + recipe.split("+", 1)[1] + "`"

    body, runs = [], groups(keyed(rows), "setting", "span", "where", "kind", "recipe")
    for (setting, budget, where, kind, control), all_rs in groups(keyed(tried), "setting", "span", "where", "kind", "control").items():
        # changes run on other seeds (a screen beside its confirmation) each get the control of their own seeds
        on_seeds: dict[frozenset, list[dict]] = {}
        for recipe_rows in groups(all_rs, "recipe").values():
            on_seeds.setdefault(frozenset(r["seed"] for r in recipe_rows), []).extend(recipe_rows)
        for tried_on, rs in sorted(on_seeds.items(), key=lambda kv: -len(kv[0])):
            baseline = [r for r in runs.get((setting, budget, where, kind, control), []) if r["seed"] in tried_on]
            machine = " and ".join(sorted({cpu(r["machine"]) for r in rs + baseline}))
            options = {named(control, setting): baseline} | {named(recipe[0], setting): g for recipe, g in groups(rs, "recipe").items()}
            val = {name: statistics.mean(numbers(g, "val_error")) for name, g in options.items() if numbers(g, "val_error")}
            lowest = min(val.values(), default=None)
            for name, g in options.items():
                mark = " (lowest)" if name in val and val[name] == lowest else ""  # a tie marks both
                epochs = f"{statistics.mean(numbers(g, 'epochs')):.1f}" if g else "–"
                body.append([setting, budget, machine, kind, name, seeds(g) if g else "–", epochs,
                             f"{percent(numbers(g, 'val_error'))}{mark}", percent(numbers(g, "test_error_one_path")),
                             percent(numbers(g, "test_error_m10")), late(g)])
    header = ["setting", "budget", "machine", "kind", "change", "seeds", "epochs", "val error %, one path",
              "test error %, one path", "test error %, M = 10", "val error %, last 10 validations"]
    return (markdown(header, body) + f"\n{ONE_MACHINE} A budget of epochs buys the same work on every "
            f"machine, so its rows pair runs of any machine. A change stacked on another (`a+b`) stands "
            f"beside that other's runs of its seeds. Machines: {machines(tried)}.\n")


def cost(rows: list[dict]) -> str:
    """What a run of these cost: its epochs and minutes of training (validation included), and where."""
    minutes = numbers(rows, "train_minutes")
    return (f"{statistics.mean(numbers(rows, 'epochs')):.0f} epochs, "
            f"{statistics.mean(minutes):.0f} min ({machines(rows)})" if minutes else "–")


def best(rows: list[dict]) -> str:
    """Per setting and kind, the long-budget recipe with the lowest mean validation error (never test),
    among those run on the most seeds. An option is a recipe trained for a number of epochs: runs of one
    recipe for different numbers of epochs are different options, never averaged together. Why the most
    seeds: a one-seed screen's mean is one draw, and beside a three-seed mean it wins by luck as often as
    by merit; a screen that helps is confirmed on fresh seeds before it can be the best."""
    rows = [r for r in rows if r["budget"] == LONG]
    if not rows:
        return NONE_YET
    body = []
    for (setting, kind), rs in groups(rows, "setting", "kind").items():
        options = groups(rs, "recipe", "epochs")
        runs_on = {k: len({r["seed"] for r in g}) for k, g in options.items()}
        most = max(runs_on.values())
        (recipe, _), chosen = min(((k, g) for k, g in options.items() if runs_on[k] == most),
                                  key=lambda kv: statistics.mean(numbers(kv[1], "val_error")))
        body.append([setting, kind, f"`{recipe}`", seeds(chosen), f"**{percent(numbers(chosen, 'test_error_one_path'))}**",
                     percent(numbers(chosen, "test_error_m10")), pixels(chosen, "pixels_per_image"), cost(chosen),
                     f"{PAPER[setting]:.2f}", f"{BEST_PUBLIC_M10[setting]:.2f}"])
    header = ["setting", "kind", "recipe (chosen on validation)", "seeds", "test error %, one path",
              "test error %, M = 10", "pixels / image, one path", "training, mean per run", "paper %",
              "best public %, M paths"]
    return markdown(header, body)


def default_run(rows: list[dict]) -> str:
    """What the default command gave the last time it ran (the newest record of its recipe)."""
    rows = [r for r in rows if r["recipe"] == DEFAULT_RECIPE]
    if not rows:
        return NONE_YET
    r = max(rows, key=lambda r: r["started"])
    return (f"On {r['machine']}: {float(r['train_minutes']):.0f} minutes of training, validation included "
            f"({float(r['epochs']):.0f} epochs, seed {r['seed']}); test error **{percent(numbers([r], 'test_error_one_path'))} %** "
            f"with one path and {percent(numbers([r], 'test_error_m10'))} % with M = 10 paths averaged.\n")


def all_runs(rows: list[dict]) -> str:
    if not rows:
        return NONE_YET
    body = [[r["setting"], r["kind"], f"`{r['recipe']}`", r["budget"], r["seed"], r["epochs"],
             f"{float(r['train_minutes']):.0f}", percent(numbers([r], "val_error")),
             percent(numbers([r], "test_error_one_path")), percent(numbers([r], "test_error_m10")), r["commit"],
             machines([r]), r["precision"]]
            for group in groups(rows, "setting", "kind").values() for r in group]
    header = ["setting", "kind", "recipe", "budget", "seed", "epochs", "minutes", "val %", "test % one path",
              "test % M = 10", "commit", "machine", "precision"]
    return markdown(header, body)


def speed(_rows: list[dict]) -> str:
    """The last ``python -m glimpse.bench --json docs/speed.json`` output, and the last side-by-side
    epoch with the public RAM (``--peer ... --json docs/peer.json``), as tables."""
    return "\n".join(bench_table(ROOT / "docs" / name) for name in ("speed.json", "peer.json"))


HEADINGS = {"train_img_s": "train img/s", "bare_img_s": "bare loop img/s", "overhead": "Lightning / bare, time",
            "eval_img_s": "eval img/s", "eval_samples": "M", "peak_mib": "peak MiB", "pixels": "pixels / image",
            "peer_img_s": "public RAM img/s", "ours_img_s": "train.py img/s", "ratio": "ratio"}


def bench_table(path: Path) -> str:
    if not path.exists():
        return f"_No benchmark recorded in docs/{path.name} yet._\n"
    data = json.loads(path.read_text())
    rows, head = (data["rows"], data) if isinstance(data, dict) else (data, {})
    columns = [c for c in ("kind", "setting", "train_img_s", "bare_img_s", "overhead", "eval_img_s", "eval_samples",
                           "peak_mib", "pixels", "precision", "peer_img_s", "ours_img_s", "ratio") if any(c in r for r in rows)]
    fmt = lambda v: f"{v:,}" if isinstance(v, int) and v >= 1000 else f"{v:,.0f}" if isinstance(v, float) and v >= 100 \
        else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = markdown([HEADINGS.get(c, c) for c in columns], [[fmt(r.get(c, "")) for c in columns] for r in rows])
    where = "; ".join(f"{k}: `{head[k]}`" if k == "command" else f"{k}: {head[k]}" for k in ("machine", "command")
                      if k in head)
    return table + (f"\n{where[:1].upper()}{where[1:]}.\n" if where else "")


LATE = "val_error_last10"  # the mean of a run's last ten validations (with_late), not a column of runs.csv


def with_late(rows: list[dict], curves: dict[tuple[str, str], list[dict]]) -> list[dict]:
    """The rows, each with ``LATE``: the mean one-path validation error of its last ten validations by
    epoch, from its recorded curve; empty for a run with fewer than ten recorded. Why beside the chosen
    checkpoint's: that one is the lowest of many validations that still move late in a run, so it is
    biased low (``selection``); the last ten are not chosen, so their mean is not."""
    def late(row: dict) -> str:
        points = sorted(curves.get(run_key(row), []), key=lambda p: int(p["epoch"]))[-10:]
        return str(statistics.mean(float(p["val_error_one_path"]) for p in points)) if len(points) == 10 else ""

    return [r | {LATE: late(r)} for r in rows]


def selection(rows: list[dict]) -> str:
    """How far the chosen checkpoint's validation error flatters it. The checkpoint is the epoch of
    lowest one-path validation error, and late in a run that error still moves from one validation to
    the next (a small change of the weights turns a few greedy paths), so the lowest of many is biased
    low; the mean of the last ten validations (``LATE``) is not chosen, so it is not. Long hard runs
    with a recorded curve, per setting; each difference is taken per run, then averaged."""
    rs = [r for r in rows if r["budget"] == LONG and r["kind"] == "hard"
          and all(numbers([r], c) for c in (LATE, "val_error", "test_error_one_path"))]
    if not rs:
        return NONE_YET
    body = []
    for (setting,), g in groups(rs, "setting").items():
        chosen, late, test = numbers(g, "val_error"), numbers(g, LATE), numbers(g, "test_error_one_path")
        body.append([setting, str(len(g)), percent(chosen), percent(late), percent(test),
                     percent([t - c for t, c in zip(test, chosen)]), percent([t - m for t, m in zip(test, late)])])
    header = ["setting", "runs", "val %, chosen checkpoint", "val %, mean of the last 10 validations",
              "test %, one path", "test - chosen val", "test - last-10 val"]
    return markdown(header, body) + f"\nMachines: {machines(rs)}.\n"


BLOCKS: dict[str, Callable[[list[dict]], str]] = {
    "answer": answer, "equal-time": equal_time, "search": search, "best": best, "default-run": default_run,
    "runs": all_runs, "speed": speed, "selection": selection}


def render(text: str, rows: list[dict], source: str = "", curves: dict[tuple[str, str], list[dict]] | None = None) -> str:
    """The document with every generated block rewritten from ``rows`` and their ``curves`` (docs/curves.csv)."""
    rows = with_late(rows, curves or {})

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise SystemExit(f"error: {source}: unknown block report:{name}; expected one of {', '.join(BLOCKS)}")
        return match.group(1) + BLOCKS[name](rows) + match.group(4)

    return BLOCK.sub(fill, text)


def drawn(rows: list[dict], curves: dict[tuple[str, str], list[dict]]) -> list[list[dict]]:
    """The recorded curves of these rows; a row recorded before curves were has none."""
    return [curves[run_key(r)] for r in rows if curves.get(run_key(r))]


def legend(rows: list[dict], curves: dict[tuple[str, str], list[dict]]) -> dict[str, str]:
    """Each kind's legend entry: how many of its runs the figure draws."""
    return {kind: f"{kind} ({len(drawn(mine, curves))} of {len(mine)} runs)" for (kind,), mine in groups(rows, "kind").items()}


def figures(rows: list[dict], curves: dict[tuple[str, str], list[dict]], out_dir: Path) -> list[Path]:
    """One-path validation error against wall-clock minutes, one figure per setting of the equal-time table
    and machine, one line per run, one colour per kind: drawn from the recorded curves (docs/curves.csv),
    never from run folders, so the figure is the same on any machine. A run recorded before curves were
    is left out, and the legend says how many of each kind's runs are drawn; a setting with no curve
    at all keeps the figure it has."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for (setting, budget, machine), rs in groups(equal_rows(rows), "setting", "budget", "machine").items():
        if not drawn(rs, curves):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        colours = {k: f"C{i}" for i, k in enumerate(KIND_ORDER)}
        labels = legend(rs, curves)
        for (kind,), mine in groups(rs, "kind").items():
            lines = drawn(mine, curves) or [[]]  # a kind with no curve keeps its legend entry: "0 of n runs"
            for n, points in enumerate(lines):
                ax.plot([float(p["minutes"]) for p in points], [100 * float(p["val_error_one_path"]) for p in points],
                        color=colours[kind], alpha=0.8, label=labels[kind] if n == 0 else None)
        ax.set(xlabel="wall-clock minutes", ylabel="validation error %, one path", yscale="log",
               title=f"{setting}, {budget.removeprefix('equal-')} per run, {cpu(machine)}")
        # errors as plain numbers (1, 2, 5, 10, 20, 50), not as 2x10^0; other minor ticks unlabelled
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "25" else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"equal-time-{setting}-{re.sub(r'[^a-z0-9]+', '-', cpu(machine).lower()).strip('-')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glimpse.report", description=__doc__.splitlines()[0])
    parser.add_argument("--add", nargs="+", type=Path, metavar="RUN_DIR", help="record these finished runs first")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is out of date")
    parser.add_argument("--figures", action="store_true", help="also draw the equal-time figures into docs/figures")
    parser.add_argument("--records", type=Path, default=ROOT / "docs" / "runs.csv")
    parser.add_argument("--root", type=Path, default=ROOT, help="the folder holding README.md and docs/")
    args = parser.parse_args(argv)
    if args.add:
        try:
            for row in add_runs(args.records, args.add):
                print(f"recorded {row['run']}: {row['setting']} {row['kind']} seed {row['seed']}")
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    rows, curves = read_rows(args.records), read_curves(args.records)
    stale = []
    for name in DOCUMENTS:
        path = args.root / name
        if not path.exists():
            continue
        text = path.read_text()
        new = render(text, rows, name, curves)
        if new != text:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    if args.check:
        if stale:
            print(f"out of date with {args.records.name}: {', '.join(stale)} (run: python -m glimpse.report)",
                  file=sys.stderr)
            return 1
        print("generated tables match the records")
        return 0
    print(f"rewrote {', '.join(stale)}" if stale else "nothing to rewrite")
    if args.figures:
        for path in figures(rows, curves, args.root / "docs" / "figures"):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

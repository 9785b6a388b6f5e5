"""The budgeted report against `--exhaustive`, side by side, and the plan's prediction against the
time it took, on the model shapes of `benchmarks.report`.

Run: `python -m benchmarks.budget --shapes organism,gpt2 --tasks ioi,recency --threads 2`
(`--budget S`: the budget of the planned side, default the report's; `--no-exhaustive`: the
budgeted side alone). Each side is `headscope report` as its own process (`report_gpt2.run_report`:
wall and CPU time, peak RSS from `os.wait4`); the plan's predicted seconds are read from the
report's own line ("plan: N s predicted"). The two sides' labels and top heads are compared task
by task (the budgeted run should name the same). `--record FILE` appends the figures, the command
line and the processor to FILE (markdown). Compare within one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.report import SHAPES, processor
from benchmarks.report_gpt2 import Measured, run_report

REPO = Path(__file__).resolve().parents[1]
PREDICTED = re.compile(r"plan: (?P<seconds>[\d.]+) s predicted")


def predicted(log: str) -> float:
    """The plan's predicted seconds, from the report's log."""
    found = PREDICTED.search(log)
    return float(found["seconds"]) if found else float("nan")


def heads(out: Path, name: str) -> dict[str, set]:
    """Per task, the (layer, head[, label]) rows of a table of a report folder."""
    path = out / f"{name}.csv"
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    keys = [c for c in ("layer", "head", "label") if c in table.columns]
    return {task: set(map(tuple, rows[keys].to_numpy().tolist())) for task, rows in table.groupby("task")}


def row(shape: str, side: Measured) -> dict:
    guess = predicted(side.log)
    return {
        "shape": shape,
        "side": side.label,
        "wall_s": round(side.wall_s, 1),
        "predicted_s": round(guess, 1),
        "predicted/actual": round(guess / side.wall_s, 2),
        "cpu_s": round(side.cpu_s, 1),
        "peak_gb": round(side.peak_rss_gb, 2),
    }


def agreement(budgeted: Path, exhaustive: Path) -> str:
    """Whether the two sides name the same labels and top heads, task by task."""
    lines = []
    for table in ("labels", "top_heads"):
        left, right = heads(budgeted, table), heads(exhaustive, table)
        same = [task for task in right if left.get(task) == right[task]]
        lines.append(f"{table}: the same on {len(same)} of {len(right)} tasks ({', '.join(same) or '-'})")
    return "; ".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.budget")
    parser.add_argument("--shapes", default="organism")
    parser.add_argument("--tasks", default="", help="comma-separated tasks (default: the report's choice)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--budget", type=float, default=None)
    parser.add_argument("--no-exhaustive", action="store_true")
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args(argv)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    budget = ("--budget", str(args.budget)) if args.budget is not None else ()
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            model = Path(SHAPES[shape](Path(tmp)))
            sides = [("budgeted", budget)] + (
                [] if args.no_exhaustive else [("exhaustive", ("--exhaustive",))]
            )
            found = {}
            for label, extra in sides:
                out = Path(tmp) / f"{shape}-{label}"
                found[label] = run_report(label, REPO / "src", model, tasks, args.n, out, args.threads, extra)
                rows.append(row(shape, found[label]))
            if len(found) == 2:
                notes.append(f"{shape}: {agreement(found['budgeted'].out, found['exhaustive'].out)}")
    load = os.getloadavg()[0]
    table = pd.DataFrame(rows).to_string(index=False)
    text = f"{processor()}; {args.threads} threads; load {load:.1f}\n\n{table}\n" + "\n".join(notes)
    print(text)
    if args.record is not None:
        given = " ".join(sys.argv[1:] if argv is None else argv)
        with args.record.open("a", encoding="utf-8") as record:
            record.write(f"\n`python -m benchmarks.budget {given}`\n\n```\n{text}\n```\n")


if __name__ == "__main__":
    main()

"""The whole `headscope report` on a GPT-2-small-shaped model: BEFORE and AFTER side by side, per phase.

Run: `python -m benchmarks report_gpt2` (every built-in task, --n 200, the report's defaults), or
`python -m benchmarks.report_gpt2 --n 40 --tasks ioi,seq-digits` for a quick run (`--threads N`: the
same thread count on both sides; left out, headscope chooses per run). Environment
knobs for the first form: HEADSCOPE_BENCH_N, HEADSCOPE_BENCH_TASKS, HEADSCOPE_BENCH_BEFORE.

Each side is the code of one commit, checked out with `git worktree add` under /tmp and run as
its own process (`python -m headscope report`, PYTHONPATH=<worktree>/src) on the same model
folder (random weights, GPT-2's real tokenizer, `gpt2_shape.save_gpt2_shaped`). Per phase and
task, the seconds come from the report's own timestamped log lines (one-second resolution);
the whole process's wall time, CPU time and peak RSS from `os.wait4`. The two runs' CSVs are
compared table by table (identical, or the largest difference). The machine is shared: absolute
times are inflated by the others' load (the load average is printed); compare the ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmarks.gpt2_shape import save_gpt2_shaped

REPO = Path(__file__).resolve().parents[1]
BEFORE = "586bb01"  # main before the knockout screen and the fused top-k (15.8 min on a quiet machine)
TASKS = ("ioi", "recency", "seq-digits", "seq-numwords", "seq-months", "seq-days", "seq-letters", "induction")
LINE = re.compile(r"^(\d\d):(\d\d):(\d\d) (.*)$")
TASK_LINE = re.compile(r"^task (?P<task>\S+): (?P<what>.*)$")


@dataclass(frozen=True)
class Measured:
    """One side's whole process and its log."""

    label: str
    wall_s: float
    cpu_s: float
    peak_rss_gb: float
    log: str
    out: Path
    started: float  # time.time() at launch


def phase_name(what: str) -> str:
    """A log message's phase, its numbers left out ('one forward pass over 200 prompts' -> 'forward')."""
    for key, name in (
        ("building", "prompts"),
        ("forward pass", "forward"),
        ("vs. logit scatter", "scatter + examples"),
    ):
        if key in what:
            return name
    return re.sub(r"\d+", "N", what).strip()


def phase_times(log: str, started: float | None = None, ended: float | None = None) -> pd.DataFrame:
    """Seconds per (task, phase) from timestamped lines: each phase lasts until the next
    timestamped line. Untimestamped lines (a wrapped line, a progress bar) are skipped; a
    line of the form `task NAME: PHASE` opens a phase, any other opens `(model)` phase
    `set-up` (before the first task) or `write page` (after the tasks), and lines indented
    by two spaces belong to the phase above. With `started` and `ended` (time.time() at launch
    and exit), the time before the first line is `import + load` and the last phase ends at exit."""
    stamps: list[tuple[float, str, str]] = []
    for text in log.splitlines():
        found = LINE.match(text.strip("\r"))
        if found is None:
            continue
        hours, minutes, seconds, message = found.groups()
        at = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
        if message.startswith("  "):
            continue
        task = TASK_LINE.match(message)
        if task is not None:
            stamps.append((at, task["task"], phase_name(task["what"])))
        else:
            after_tasks = any(task != "(model)" for _, task, _ in stamps)
            stamps.append((at, "(model)", model_phase(message, after_tasks)))
    rows = []
    if started is not None and stamps:
        begin = _clock(started)
        rows.append({"task": "(model)", "phase": "import + load", "seconds": (stamps[0][0] - begin) % 86400})
    if ended is not None and stamps:
        stamps.append((_clock(ended), "", ""))
    for (at, task, phase), (following, _, _) in zip(stamps, stamps[1:], strict=False):
        rows.append({"task": task, "phase": phase, "seconds": (following - at) % 86400})
    table = pd.DataFrame(rows, columns=["task", "phase", "seconds"])
    return table.groupby(["task", "phase"], as_index=False, sort=False)["seconds"].sum()


MODEL_PHASES = (
    ("OV kernel", "OV kernel, once"),
    ("head atlas", "atlas"),
    ("writing results.json", "write results + CSVs"),
    ("drawing", "draw PNGs"),
)


def model_phase(message: str, after_tasks: bool) -> str:
    """The phase a line outside the tasks opens: a named step, else set-up or the page."""
    for start, name in MODEL_PHASES:
        if message.startswith(start):
            return name
    return "write page" if after_tasks else "set-up"


def _clock(when: float) -> int:
    """Seconds since local midnight, as the log's HH:MM:SS stamps count."""
    local = time.localtime(when)
    return local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec


def compare_tables(before: Path, after: Path) -> pd.DataFrame:
    """Every CSV the two report folders share: rows, and whether equal ('identical'), equal but for
    float rounding (the largest absolute difference of the numeric columns), or different."""
    rows = []
    for left in sorted(before.rglob("*.csv")):
        right = after / left.relative_to(before)
        if right.is_file():
            rows.append({"table": str(left.relative_to(before)), **_compared(left, right)})
    return pd.DataFrame(rows, columns=["table", "rows", "verdict"])


def _compared(left: Path, right: Path) -> dict:
    a, b = pd.read_csv(left), pd.read_csv(right)
    if "exact" in b.columns and not b["exact"].all():  # a screened knockout table: exact rows only
        return _compared_exact(a, b)
    if len(a) != len(b):
        return {"rows": f"{len(a)} vs {len(b)}", "verdict": "different rows"}
    if list(a.columns) != list(b.columns):  # a column added or dropped on one side: the others compared
        shared = [c for c in a.columns if c in b.columns]
        added = sorted(set(a.columns) ^ set(b.columns))
        verdict = _compared_frames(a[shared], b[shared])
        return {
            "rows": len(a),
            "verdict": f"{verdict} on the shared columns (one side only: {', '.join(added)})",
        }
    return {"rows": len(a), "verdict": _compared_frames(a, b)}


def _compared_exact(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """A knockout table whose heads were screened: the rows it marks exact against the same rows
    of the other side (the rest are first-order estimates, counted, not compared)."""
    exact = b["exact"].astype(bool).to_numpy()
    shared = [c for c in a.columns if c in b.columns]
    if len(a) != len(b):
        return {"rows": f"{len(a)} vs {len(b)}", "verdict": "different rows"}
    verdict = _compared_frames(
        a.loc[exact, shared].reset_index(drop=True), b.loc[exact, shared].reset_index(drop=True)
    )
    return {
        "rows": len(b),
        "verdict": f"{verdict} on the {exact.sum()} exact rows; {len(b) - exact.sum()} estimates",
    }


def _compared_frames(a: pd.DataFrame, b: pd.DataFrame) -> str:
    if a.equals(b):
        return "identical"
    numeric = a.select_dtypes("number").columns
    others = [c for c in a.columns if c not in numeric]
    if not a[others].equals(b[others]):
        return "different text columns"
    return f"max |diff| {(a[numeric] - b[numeric]).abs().max().max():.2e}"


def worktree(commit: str) -> Path:
    """A checkout of `commit` under /tmp (made once with `git worktree add --detach`)."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", commit], check=True, capture_output=True, text=True
    ).stdout.strip()
    where = Path(tempfile.gettempdir()) / f"headscope-{sha}"
    if not (where / "src" / "headscope").is_dir():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), sha],
            check=True,
            capture_output=True,
        )
    return where


def run_report(
    label: str,
    src: Path,
    model: Path,
    tasks: tuple[str, ...],
    n: int,
    out: Path,
    threads: int | None = None,
    extra: tuple[str, ...] = (),
) -> Measured:
    """`python -m headscope report` with PYTHONPATH=src, as its own process, measured; `threads`
    None leaves the count to headscope (which reads the load: one thread right after a run); no
    `tasks`: the report's own choice; `extra`: more options."""
    command = [sys.executable, "-m", "headscope", "report", "--model", str(model)]
    command += ["--tasks", ",".join(tasks)] if tasks else []
    command += ["--n", str(n), "--out", str(out), *extra]
    command += ["--threads", str(threads)] if threads is not None else []
    env = os.environ | {"PYTHONPATH": str(src), "COLUMNS": "400"}  # no wrapped log lines
    log_path = out.with_suffix(".log")
    print(f"  {label}: {' '.join(command[1:])}  (PYTHONPATH={src})", flush=True)
    with log_path.open("w") as log:
        started, clock = time.time(), time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=src.parent)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - clock
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label} failed; see {log_path}:\n{log_path.read_text()[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    rss_gb = usage.ru_maxrss * 1024 / 1e9  # Linux: kilobytes
    return Measured(label, wall, cpu, rss_gb, log_path.read_text(), out, started)


def side_by_side(before: Measured, after: Measured) -> pd.DataFrame:
    """Seconds per task and phase, both sides, and before / after."""
    left = phase_times(before.log, before.started, before.started + before.wall_s)
    right = phase_times(after.log, after.started, after.started + after.wall_s)
    left, right = left.rename(columns={"seconds": "before_s"}), right.rename(columns={"seconds": "after_s"})
    table = left.merge(right, on=["task", "phase"], how="outer", sort=False)
    return table.assign(ratio=(table["before_s"] / table["after_s"]).round(2))


def per_phase(table: pd.DataFrame) -> pd.DataFrame:
    """The side-by-side seconds summed over tasks, per phase."""
    summed = table.groupby("phase", as_index=False, sort=False)[["before_s", "after_s"]].sum(min_count=1)
    return summed.assign(ratio=(summed["before_s"] / summed["after_s"]).round(2))


def report(before: Measured, after: Measured) -> None:
    table = side_by_side(before, after)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print("\nper task and phase (seconds, from the report's log lines):")
        print(table.to_string(index=False))
        print("\nper phase, all tasks:")
        print(per_phase(table).to_string(index=False))
        print("\nnumbers, table by table:")
        print(compare_tables(before.out, after.out).to_string(index=False))
    for side in (before, after):
        print(
            f"{side.label}: whole process {side.wall_s:.1f} s wall ({side.wall_s / 60:.2f} min), "
            f"{side.cpu_s:.1f} s CPU, peak RSS {side.peak_rss_gb:.2f} GB"
        )
    print(
        f"ratio before / after: wall {before.wall_s / after.wall_s:.2f}x, "
        f"CPU {before.cpu_s / after.cpu_s:.2f}x (CPU time moves less with the others' load)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report_gpt2")
    parser.add_argument("--n", type=int, default=int(os.environ.get("HEADSCOPE_BENCH_N", "200")))
    parser.add_argument("--tasks", default=os.environ.get("HEADSCOPE_BENCH_TASKS", ",".join(TASKS)))
    parser.add_argument("--before", default=os.environ.get("HEADSCOPE_BENCH_BEFORE", BEFORE))
    parser.add_argument("--after", default="HEAD", help="a commit, or 'tree' for this working tree")
    parser.add_argument("--after-first", action="store_true", help="run AFTER first (the load drifts)")
    parser.add_argument(
        "--threads", type=int, default=None, help="--threads for both sides (default: chosen)"
    )
    options = parser.parse_args(argv or [])
    tasks = tuple(t.strip() for t in options.tasks.split(",") if t.strip())
    after_src = REPO / "src" if options.after == "tree" else worktree(options.after) / "src"
    sides = (
        ("before " + options.before, worktree(options.before) / "src"),
        ("after " + options.after, after_src),
    )
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
    with tempfile.TemporaryDirectory() as tmp:
        model = save_gpt2_shaped(Path(tmp) / "gpt2-small-shaped")
        order = sides[::-1] if options.after_first else sides
        measured = {
            label: run_report(
                label, src, model, tasks, options.n, Path(tmp) / label.split()[0], options.threads
            )
            for label, src in order
        }
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        report(*(measured[label] for label, _ in sides))


if __name__ == "__main__":
    main(sys.argv[1:])

"""`headscope report --from DIR [DIR ...]`: a saved run's page again, or several runs merged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from headscope.errors import HeadscopeError
from headscope.report.html import check_report_folder
from headscope.report.merge import merge_runs
from headscope.run import RESULTS_FILE, Run, load_run

DEFAULT_OUT = Path("headscope-report")


def results_folder(given: Path) -> Path:
    """The folder --from names: DIR, or DIR/results.json taken as DIR."""
    if given.name == RESULTS_FILE and given.is_file():
        return given.parent
    if given.is_file():
        raise HeadscopeError(f"--from {given} is a file; give the report folder that holds {RESULTS_FILE}")
    return given


def saved_run(folders: list[Path], out: Path, say: Callable[[str], None]) -> tuple[Run, Path]:
    """The run of one folder (its page goes back there unless --out), or the runs of several merged
    into one (--out required, none of the folders merged)."""
    runs = []
    for folder in folders:
        runs.append(load_run(folder))
        model = runs[-1].model.get("name")
        say(f"loaded {folder / RESULTS_FILE} (model {model}, tasks {', '.join(runs[-1].tasks)})")
    if len(runs) == 1:
        return runs[0], check_report_folder(folders[0] if out == DEFAULT_OUT else out)
    if out == DEFAULT_OUT or any(out.resolve() == folder.resolve() for folder in folders):
        raise HeadscopeError(
            f"--out {out}: give the merged report a folder of its own (--from DIR1 DIR2 ... --out MERGED)"
        )
    merged = merge_runs(runs, [str(folder) for folder in folders])
    say(f"merged {len(runs)} runs: {len(merged.tasks)} tasks")
    return merged, check_report_folder(out)

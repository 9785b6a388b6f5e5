"""`headscope report` as a subprocess: same seed, same bytes; killed or Ctrl-C'd, nothing lost.

The runs are stopped at a named phase (a line the report prints), by SIGKILL to the process
or SIGINT to its process group (what Ctrl-C in a terminal sends), and the earlier report in
--out must come through byte for byte, with no temporary file inside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from headscope.run import RESULTS_FILE
from tests.cli.runner import run_cli

INTERRUPTED = "error: interrupted: stopped cleanly, earlier outputs are intact"
TIMESTAMPED = re.compile(r"^\d\d:\d\d:\d\d ")  # the report's progress lines


SMALL = ("--tasks", "ioi", "--n", "6", "--top", "2", "--knockout-n", "4")
# Long enough (about 5 s on a quiet machine, most of it after the first knockout and in
# drawing) that a signal sent as soon as a phase's line is read lands before the report ends.
LONGER = ("--tasks", "ioi,recency,seq-digits,induction", "--n", "100", "--top", "4", "--knockout-n", "64")


def report_args(model: Path, out: Path, seed: int, sizes: tuple[str, ...] = SMALL) -> list[str]:
    return [
        sys.executable,
        "-m",
        "headscope.cli",
        "report",
        "--model",
        str(model),
        *sizes,
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]


def run_report(model: Path, out: Path, seed: int) -> Path:
    result = subprocess.run(report_args(model, out, seed), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def earlier(tiny_dir, tmp_path_factory) -> Path:
    """A finished report (seed 0) that later runs must not damage."""
    return run_report(tiny_dir, tmp_path_factory.mktemp("earlier") / "report", seed=0)


@pytest.fixture
def out(earlier, tmp_path) -> Path:
    """A copy of the earlier report, the --out of a run that will be stopped."""
    return Path(shutil.copytree(earlier, tmp_path / "report"))


def _default_sigint() -> None:
    """Ctrl-C as in a terminal's foreground job: a test suite started in the background
    (`make test &`) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Started:
    """A report running in its own process group, its printed lines read as they come."""

    def __init__(self, args: list[str]):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
        self.lines: list[str] = []

    def wait_for(self, text: str) -> None:
        for line in self.process.stderr:  # progress goes to stderr
            self.lines.append(line)
            if text in line:
                return
        pytest.fail(f"the report ended before printing {text!r}:\n{''.join(self.lines)}")

    def stop(self, kill) -> tuple[str, str]:
        """What is left on stderr (progress, the error line), and stdout."""
        kill()
        try:
            out, rest = self.process.communicate(timeout=120)
        finally:
            self.reap()
        return rest, out

    def reap(self) -> None:
        """Kill what is left of the group (forked PNG workers orphaned by a SIGKILL)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def test_same_seed_writes_byte_identical_results_and_csvs(tiny_dir, earlier, tmp_path):
    again = files(run_report(tiny_dir, tmp_path / "again", seed=0))
    first = files(earlier)
    csvs = sorted(name for name in first if name.endswith(".csv"))
    assert len(csvs) >= 10 and csvs == sorted(name for name in again if name.endswith(".csv"))
    for name in csvs:
        assert again[name] == first[name], name
    a, b = (json.loads(f[RESULTS_FILE]) for f in (first, again))
    assert a.pop("created") and b.pop("created")  # the timestamp, outside the hashed content
    assert a == b and a["content_sha256"] == b["content_sha256"] and a["seed"] == 0
    assert _without_created(first[RESULTS_FILE]) == _without_created(again[RESULTS_FILE])


def _without_created(raw: bytes) -> bytes:
    record = json.loads(raw)
    return raw.replace(f'"created": "{record["created"]}"'.encode(), b"")


def test_sigkill_while_writing_leaves_the_earlier_report_whole(tiny_dir, out):
    before = files(out)
    run = Started(report_args(tiny_dir, out, seed=1))
    run.wait_for("writing results.json")  # inside the write phase: the new folder is half-built
    run.stop(lambda: os.kill(run.process.pid, signal.SIGKILL))
    assert run.process.returncode == -signal.SIGKILL
    assert files(out) == before  # nothing added, removed or changed, no temporary file inside
    leftovers = [p.name for p in out.parent.iterdir() if p.name != "report"]
    assert leftovers and all(name.startswith(f".report.partial-{run.process.pid}-") for name in leftovers)


@pytest.mark.parametrize(
    ("phase", "extra"),
    [("task ioi: knockout table", ()), ("drawing", ("--png",))],
    ids=["knockout", "drawing"],
)
def test_ctrl_c_prints_one_line_and_keeps_the_earlier_report(tiny_dir, out, phase, extra):
    """PNGs are drawn only when asked (--png): the drawing phase is reached with it."""
    before = files(out)
    run = Started(report_args(tiny_dir, out, seed=1, sizes=(*LONGER, *extra)))
    run.wait_for(phase)  # the line is written whole, in one call: a signal now cannot repeat it
    rest, err = run.stop(lambda: os.killpg(run.process.pid, signal.SIGINT))
    assert run.process.returncode == 130, rest + err
    lines = rest.splitlines()  # progress lines may come first: the run goes on until the signal lands
    assert lines[-1] == INTERRUPTED and lines.count(INTERRUPTED) == 1, rest
    assert all(TIMESTAMPED.match(line) for line in lines[:-1]), rest
    assert "Traceback" not in rest + err
    assert files(out) == before
    assert sorted(os.listdir(out.parent)) == ["report"]  # the half-built folder was removed


def headscope(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args)


@pytest.mark.parametrize(
    "command",
    [("scores",), ("attention",), ("scatter",), ("evaluate",), ("ablate",), ("patch",), ("tasks", "show")],
)
def test_an_unknown_task_is_named_before_the_model_is_loaded(command, tmp_path):
    """The model does not exist either: the task, checked first, is the one reported."""
    task = ["nope"] if command == ("tasks", "show") else ["--task", "nope"]
    result = headscope(*command, *task, "--model", str(tmp_path / "no-model"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: unknown task 'nope'"), result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "command",
    [
        ("ablate", "--out"),
        ("patch", "--out"),
        ("scores", "--task", "ioi", "--out"),
        ("scores", "--task", "ioi", "--per-token"),
    ],
)
def test_a_table_output_of_an_unknown_kind_is_refused_before_the_model_loads(command, tmp_path):
    result = headscope(*command, str(tmp_path / "a.txt"), "--model", str(tmp_path / "no-model"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "a.txt: use a .csv or .json file name" in result.stderr.replace("\n", ""), result.stderr

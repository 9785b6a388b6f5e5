"""CPU threads: whole-process times of a few commands with torch's default thread count, with
the count headscope chooses, and with one thread, on a quiet machine and on a loaded one.

Run: `python -m benchmarks threads`. Each command is a fresh `python -m headscope ...`
process (import, model load and the work, as a user runs it), timed from start to exit.
"Loaded" means one busy-looping process per core but one (`burner`), started here and
stopped when the condition's runs end (each also stops itself after BURNER_LIMIT_S), so every
multi-threaded run shares its cores. The three settings run in turn (A B C A B C ...), so a
drift of the machine's speed touches all three alike; the median of HEADSCOPE_BENCH_REPEATS
runs (default 3) is printed, with each setting's ratio to the chosen one. Every run's
output files are compared: the numbers must not depend on the thread count.

HEADSCOPE_BENCH_ONLY=GPT-2 runs only the workloads whose name contains it.

Settings: `default` passes --threads with torch's own default (one per core, as a plain
`import torch` gets); `chosen` passes nothing (headscope's per-model choice, see
`headscope.models.devices.choose_threads`); `one` passes --threads 1.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

BURNER_LIMIT_S = 1800  # a burner left behind by a killed benchmark stops itself after this
BURN = f"import time\nend = time.monotonic() + {BURNER_LIMIT_S}\nwhile time.monotonic() < end: pass\n"


@dataclass(frozen=True)
class Workload:
    """One command line (without --threads and --out) and the output file name it writes."""

    name: str
    args: tuple[str, ...]
    out: str


def torch_default_threads() -> int:
    """torch's default intra-op thread count in a fresh process (what a plain user gets)."""
    found = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(found.stdout)


def settings() -> dict[str, tuple[str, ...]]:
    return {"default": ("--threads", str(torch_default_threads())), "chosen": (), "one": ("--threads", "1")}


@contextmanager
def burner(processes: int) -> Iterator[list[subprocess.Popen]]:
    """`processes` busy-looping Python processes for the duration of the block."""
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(processes)]
    try:
        yield burners
    finally:
        for process in burners:
            process.kill()
            process.wait()


def digest(out: Path) -> str:
    """SHA-256 of the numbers a run wrote: the file, or a folder's CSV tables (a report's page
    and results.json carry the run's time)."""
    if not out.is_dir():
        return hashlib.sha256(out.read_bytes()).hexdigest()
    hashed = hashlib.sha256()
    for path in sorted(out.glob("*.csv")):
        hashed.update(path.name.encode() + b"\0" + path.read_bytes())
    return hashed.hexdigest()


def timed(command: list[str], out: Path) -> tuple[float, str]:
    """Wall seconds of one whole process, and the digest of what it wrote to `out`."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return seconds, digest(out)


def run_condition(
    workloads: list[Workload], chosen: dict[str, tuple[str, ...]], repeats: int, folder: Path
) -> list[dict]:
    """Each workload's runs under every setting, interleaved; one row per (workload, setting)."""
    rows = []
    for workload in workloads:
        times: dict[str, list[float]] = {name: [] for name in chosen}
        digests: set[str] = set()
        for _ in range(repeats):
            for name, flags in chosen.items():
                out = folder / f"{workload.name}-{name}-{workload.out}"
                command = [sys.executable, "-m", "headscope", *workload.args, *flags, "--out", str(out)]
                seconds, digest = timed(command, out)
                times[name].append(seconds)
                digests.add(digest)
        rows += [
            {
                "workload": workload.name,
                "setting": name,
                "median_s": statistics.median(runs),
                "runs": len(runs),
            }
            for name, runs in times.items()
        ] + [
            {"workload": workload.name, "setting": "identical outputs", "median_s": float(len(digests) == 1)}
        ]
    return rows


def side_by_side(rows: list[dict]) -> pd.DataFrame:
    """condition x workload rows; a column per setting's median seconds and its ratio to `chosen`."""
    frame = pd.DataFrame(rows)
    same = frame[frame.setting == "identical outputs"].set_index(["condition", "workload"]).median_s
    times = frame[frame.setting != "identical outputs"].pivot_table(
        index=["condition", "workload"], columns="setting", values="median_s", sort=False
    )
    for name in times.columns:
        if name != "chosen":
            times[f"{name}/chosen"] = times[name] / times["chosen"]
    return times.assign(identical=same.astype(bool)).reset_index()


def workloads(gpt2_dir: Path | None) -> list[Workload]:
    found = [
        Workload("organism scores", ("scores", "--task", "seq-digits", "--n", "200"), "scores.csv"),
        Workload(
            "organism ablate --greedy", ("ablate", "--task", "seq-digits", "--n", "32", "--greedy"), "a.csv"
        ),
        Workload(
            "organism report (ioi)",
            ("report", "--tasks", "ioi", "--n", "64", "--knockout-n", "16"),
            "report",
        ),
    ]
    if gpt2_dir is not None:
        model = ("--model", str(gpt2_dir))
        found += [
            Workload(
                "GPT-2-shaped evaluate", ("evaluate", *model, "--task", "ioi", "--n", "200"), "eval.json"
            ),
            Workload(
                "GPT-2-shaped ablate", ("ablate", *model, "--task", "seq-digits", "--n", "8"), "ablate.csv"
            ),
        ]
    return found


def main() -> None:
    from benchmarks.precision import gpt2_shaped

    repeats = int(os.environ.get("HEADSCOPE_BENCH_REPEATS", "3"))
    layers = int(os.environ.get("HEADSCOPE_THREADS_LAYERS", "4"))
    cores = os.cpu_count() or 1
    chosen = settings()
    print(f"{cores} cores; torch default {chosen['default'][1]} threads; {repeats} runs each", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        found = workloads(gpt2_shaped(folder / "gpt2", layers) if layers > 0 else None)
        only = os.environ.get("HEADSCOPE_BENCH_ONLY")  # run the workloads whose name contains this
        found = [w for w in found if only is None or only in w.name]
        for condition, burners in (("quiet", 0), ("loaded", max(1, cores - 1))):
            print(f"{condition}: load average {os.getloadavg()[0]:.1f} before", flush=True)
            with burner(burners):
                found_rows = run_condition(found, chosen, repeats, folder)
            rows += [row | {"condition": condition} for row in found_rows]
            print(side_by_side(rows).to_string(index=False, float_format=lambda v: f"{v:.2f}"), flush=True)

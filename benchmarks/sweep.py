"""A sweep through Ray with 2 workers against the same sweep run sequentially, whole process.

Run: `python -m benchmarks sweep`. The models are HEADSCOPE_BENCH_MODELS (default 4) copies of the
bundled organism (4 layers x 2 heads, d_model 192) in folders `step-0`, `step-1`, ..., so each
job does the same work; tasks induction and seq-digits, 100 prompts each (the sweep's default
analyses: evaluation, OV scores, attention, DLA, labels; no knockouts). Each side is one
`headscope sweep` process timed from outside (wall clock around the child), with the sum of the
jobs' own seconds from its summary.csv (model load to run folder written; what a worker's start-up
adds is the rest):

- sequential: `--jobs 1`, every model in turn in the one process (no Ray);
- Ray: `--jobs 2`, a local Ray instance of 2 CPUs and 2 worker processes, each running job after
  job (each model loaded afresh; the worker imports torch once).

Ray's start-up (ray.init of the local instance, as the sweep reports it on stderr) is printed on
its own. The two sweeps' heads.csv must agree (every score within 1e-6), so both did the same
work. HEADSCOPE_BENCH_RUNS pairs (default 1), alternating sequential and Ray.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

TASKS = "induction,seq-digits"
N = 100


def models(folder: Path, count: int) -> Path:
    """`count` copies of the bundled organism, and the models file naming them."""
    from headscope.models.loading import ORGANISM_DIR

    paths = []
    for step in range(count):
        paths.append(shutil.copytree(ORGANISM_DIR, folder / f"step-{step}"))
    listing = folder / "models.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    return listing


def timed_sweep(listing: Path, out: Path, jobs: int) -> dict:
    """Wall seconds of one `headscope sweep` process, its jobs' own seconds, Ray's start-up."""
    command = [sys.executable, "-m", "headscope", "sweep", "--models-file", str(listing), "--tasks", TASKS]
    command += ["--n", str(N), "--jobs", str(jobs), "--out", str(out)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"sweep --jobs {jobs} failed: {done.stderr.strip().splitlines()[-1:]}")
    found = re.search(r"started a local Ray instance in ([\d.]+) s", done.stderr)
    jobs_s = float(pd.read_csv(out / "summary.csv")["seconds"].sum())
    return {"wall": wall, "jobs": jobs_s, "ray_startup": float(found.group(1)) if found else None}


def same_scores(first: Path, second: Path) -> float:
    """The largest difference between the two sweeps' scores (keyed by model, task, head, analysis)."""
    keys = ["name", "task", "layer", "head", "analysis"]
    a = pd.read_csv(first / "heads.csv").set_index(keys)["score"]
    b = pd.read_csv(second / "heads.csv").set_index(keys)["score"]
    assert a.index.sort_values().equals(b.index.sort_values()), "the sweeps scored different heads"
    return float((a - b.reindex(a.index)).abs().max())


def main() -> None:
    count = int(os.environ.get("HEADSCOPE_BENCH_MODELS", "4"))
    runs = int(os.environ.get("HEADSCOPE_BENCH_RUNS", "1"))
    print(f"{count} organism copies, tasks {TASKS}, n={N}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        listing = models(Path(tmp), count)
        for run in range(runs):
            sequential = timed_sweep(listing, Path(tmp) / f"seq-{run}", 1)
            ray = timed_sweep(listing, Path(tmp) / f"ray-{run}", 2)
            largest = same_scores(Path(tmp) / f"seq-{run}", Path(tmp) / f"ray-{run}")
            print(
                f"sequential (--jobs 1): {sequential['wall']:.1f} s wall, jobs {sequential['jobs']:.1f} s; "
                f"Ray, 2 workers (--jobs 2): {ray['wall']:.1f} s wall, jobs {ray['jobs']:.1f} s, Ray's "
                f"start-up {ray['ray_startup']:.1f} s; ratio sequential / Ray "
                f"{sequential['wall'] / ray['wall']:.2f}x; largest score difference {largest:.1e}"
            )


if __name__ == "__main__":
    main()

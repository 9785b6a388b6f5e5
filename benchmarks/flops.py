"""The report's arithmetic floor: what its matrix products cost at this machine's best rate.

Run: `python -m benchmarks.flops --shape 135m --tasks ioi,recency,seq-digits,seq-months,seq-days,induction`
(or `--model DIR`, a saved model folder; `--log FILE`: a report's console log, from
`benchmarks.report --keep`, whose per-phase seconds are set beside the floor).

The whole report runs in this process (`report.plan.build_run`, the report's own options) under
torch's `FlopCounterMode`, which counts the FLOPs of every matrix product (mm, bmm, baddbmm,
attention) and of nothing else; the OV pass's worker threads each run under a counter of their
own (a dispatch mode is per thread), added in. FLOPs are attributed to phases by the report's own
log lines, named as `benchmarks.report` names them. The ceiling is the best rate of a few float32
products (square, and the report's own shapes), measured in the same run at the same thread count.

`floor_s = FLOPs / ceiling` is the time a phase's products alone would take at that rate: no
implementation that does the same float32 products (the same numbers) beats it on this machine.
The seconds under the counter are inflated by its per-operation cost; a report's own log gives
the real ones.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.ov import _matmul_runs
from benchmarks.report import SHAPES, processor
from benchmarks.report_gpt2 import TASK_LINE, model_phase, phase_name, phase_times

# (m, k, n): square, a transformer layer's products on ~1,000 tokens, and the OV pass's
# rank-64 logits block ([2048 rows, 64] @ [64, 1024 columns]).
CEILING_SHAPES = ((2048, 2048, 2048), (1280, 768, 3072), (1280, 3072, 768), (2048, 64, 1024))


def product_rate(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """GFLOP/s of a float32 [m, k] @ [k, n], the best of repeated timings over about `seconds`."""
    return 2 * m * k * n / min(_matmul_runs(torch.randn(m, k), torch.randn(k, n), seconds)) / 1e9


def ceiling() -> tuple[float, dict[str, float]]:
    """The best rate over CEILING_SHAPES at the current thread count, and each shape's."""
    rates = {"x".join(map(str, shape)): product_rate(*shape) for shape in CEILING_SHAPES}
    return max(rates.values()), rates


class WorkerFlops:
    """FLOPs counted in other threads (the OV pass's workers), each under a counter of its own."""

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()

    def wrap(self, worker: Callable) -> Callable:
        def counted(*args, **kwargs):
            with FlopCounterMode(display=False) as counter:
                found = worker(*args, **kwargs)
            with self._lock:
                self.total += counter.get_total_flops()
            return found

        return counted


class PhaseFlops:
    """A `say` for the report that books the FLOPs since the last phase line to that phase."""

    def __init__(self, counter: FlopCounterMode, workers: WorkerFlops) -> None:
        self.counter, self.workers = counter, workers
        self.rows: list[dict] = []
        self._phase, self._flops, self._at = ("(model)", "set-up"), 0, time.perf_counter()

    def __call__(self, message: str) -> None:
        if message.startswith("  "):
            return  # a detail of the phase above
        self.close()
        task = TASK_LINE.match(message)
        if task is not None:
            self._phase = (task["task"], phase_name(task["what"]))
        else:
            after_tasks = any(row["task"] != "(model)" for row in self.rows)
            self._phase = ("(model)", model_phase(message, after_tasks))

    def close(self) -> None:
        flops = self.counter.get_total_flops() + self.workers.total
        now = time.perf_counter()
        task, phase = self._phase
        self.rows.append({"task": task, "phase": phase, "gflop": (flops - self._flops) / 1e9,
                          "counted_s": now - self._at})  # fmt: skip
        self._flops, self._at = flops, now


def counted_report(model_path: str, tasks: list[str], n: int, threads: int) -> PhaseFlops:
    """The report's tables built under the counters; FLOPs and seconds per phase."""
    import headscope as hs
    from headscope.report import compute, plan
    from headscope.scores import ov_kernel
    from headscope.tasks.registry import get_task

    before = torch.get_num_threads()
    model = hs.load_model(model_path)
    workers = WorkerFlops()
    plain, ov_kernel._worker = ov_kernel._worker, workers.wrap(ov_kernel._worker)
    torch.set_num_threads(threads)  # after loading, which sets its own count; `before` restored below
    try:
        with FlopCounterMode(display=False) as counter:
            booked = PhaseFlops(counter, workers)
            options = compute.ReportOptions(tasks=tuple(tasks), n=n)
            plan.build_run(model, [get_task(t) for t in tasks], options, booked)
            booked.close()
    finally:
        ov_kernel._worker = plain
        torch.set_num_threads(before)
    return booked


def per_phase(booked: PhaseFlops, rate: float, log: str | None) -> pd.DataFrame:
    """FLOPs, floor and (with a report's log) its seconds per phase, all tasks summed."""
    table = pd.DataFrame(booked.rows).groupby("phase", sort=False)[["gflop", "counted_s"]].sum()
    table["floor_s"] = table["gflop"] / rate
    if log is not None:
        seconds = phase_times(log).groupby("phase")["seconds"].sum()
        table["report_s"] = seconds.reindex(table.index)
        table["share_of_ceiling"] = table["floor_s"] / table["report_s"]
    table.loc["total"] = table.sum(numeric_only=True)
    if log is not None:
        total = table.loc["total"]
        table.loc["total", "share_of_ceiling"] = total["floor_s"] / total["report_s"]
    return table.round(2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flops", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="organism")
    parser.add_argument("--model", help="a saved model folder (instead of --shape)")
    parser.add_argument("--tasks", default="ioi", help="comma-separated task names")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log", help="a report's console log: its per-phase seconds beside the floor")
    args = parser.parse_args(argv or [])  # `python -m benchmarks flops`: the defaults
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or str(SHAPES[args.shape](Path(folder)))
        torch.set_num_threads(args.threads)
        rate, rates = ceiling()
        booked = counted_report(model, args.tasks.split(","), args.n, args.threads)
    log = Path(args.log).read_text(encoding="utf-8", errors="replace") if args.log else None
    print(f"{processor()}; {args.threads} threads; model {model}; tasks {args.tasks}; {args.n} prompts")
    print("float32 product rates, GFLOP/s: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    print(f"ceiling: {rate:.1f} GFLOP/s")
    print(per_phase(booked, rate, log).to_string())
    if log is not None:  # the phases the counted run has not (the page, the files) are left out above
        print(f"the report's log, first line to last: {phase_times(log)['seconds'].sum():.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])

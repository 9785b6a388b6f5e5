"""The floor benchmark counts what it says: products in other threads, booked to the phase whose
log line they follow, against 2 m k n counted by hand; and the whole report on the organism."""

from concurrent.futures import ThreadPoolExecutor

import torch
from benchmarks.flops import PhaseFlops, WorkerFlops, counted_report, per_phase
from torch.utils.flop_counter import FlopCounterMode


def _product(m: int, k: int, n: int) -> torch.Tensor:
    return torch.randn(m, k) @ torch.randn(k, n)


def test_products_in_worker_threads_are_counted():
    workers = WorkerFlops()
    counted = workers.wrap(_product)
    with FlopCounterMode(display=False) as main_thread, ThreadPoolExecutor(2) as pool:
        list(pool.map(counted, [3, 5], [7, 7], [11, 2]))
    assert workers.total == 2 * 3 * 7 * 11 + 2 * 5 * 7 * 2
    assert main_thread.get_total_flops() == 0  # a dispatch mode is per thread: why the wrap exists


def test_flops_are_booked_to_the_phase_above():
    workers = WorkerFlops()
    with FlopCounterMode(display=False) as counter:
        booked = PhaseFlops(counter, workers)
        _product(2, 3, 4)  # set-up
        booked("task ioi: one forward pass over 8 prompts")
        _product(4, 4, 4)
        booked("  a detail line: still the forward pass")
        with ThreadPoolExecutor(1) as pool:  # as the OV pass's workers add theirs
            pool.submit(workers.wrap(_product), 1, 10, 10).result()
        booked("task ioi: knockout table")
        _product(8, 1, 8)
        booked.close()
    by_phase = {row["phase"]: row["gflop"] * 1e9 for row in booked.rows}
    assert by_phase == {"set-up": 48, "forward": 2 * 64 + 200, "knockout table": 128}


def test_floor_is_flops_over_the_rate_and_sums_by_phase():
    booked = PhaseFlops(FlopCounterMode(display=False), WorkerFlops())
    booked.rows = [
        {"task": "ioi", "phase": "forward", "gflop": 30.0, "counted_s": 1.0},
        {"task": "induction", "phase": "forward", "gflop": 10.0, "counted_s": 1.0},
        {"task": "ioi", "phase": "knockout table", "gflop": 200.0, "counted_s": 5.0},
    ]
    lines = ["12:00:00 task ioi: one forward pass over 8 prompts", "12:00:04 task ioi: knockout table"]
    log = "\n".join([*lines, "12:00:14 done"])  # the forward pass 4 s, the knockouts 10 s
    table = per_phase(booked, rate=20.0, log=log)
    assert table.loc["forward", "gflop"] == 40.0 and table.loc["forward", "floor_s"] == 2.0
    knockouts, total = table.loc["knockout table"], table.loc["total"]
    assert knockouts["report_s"] == 10 and knockouts["floor_s"] == 10.0
    assert total["floor_s"] == 12.0 and total["share_of_ceiling"] == round(12 / 14, 2)


def test_organism_report_counts_every_phase_it_runs():
    booked = counted_report("organism", ["ioi"], n=16, threads=1)
    flops = {row["phase"]: row["gflop"] for row in booked.rows}
    assert flops["forward"] > 0 and flops["knockout table"] > 0 and flops["OV kernel, once"] > 0

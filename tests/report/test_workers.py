"""The report's tasks in forked processes: the same results as one after another, shared out by
predicted cost, errors raised in the parent."""

from __future__ import annotations

import dataclasses
import multiprocessing
import re

import pandas.testing as pdt
import pytest
import torch

from headscope.models.loading import load_model
from headscope.report import compute, plan, workers

RATE = 5e10
QUIET = dict(say=lambda message: None)


def test_shares_give_the_costliest_item_first_to_the_least_loaded_worker():
    assert workers.shares([5.0, 1.0, 1.0, 4.0], 2) == [[0, 2], [1, 3]]  # 5 | 4, then 1 -> 4+1, 1 -> 5+1
    assert workers.shares([1.0, 1.0, 1.0], 2) == [[0, 2], [1]]
    assert workers.shares([1.0], 4) == [[0]]  # no empty worker


def test_forked_map_equals_the_plain_map_and_reports_each_result_once():
    offset = torch.arange(3)  # a closure over a tensor: fork copies it, nothing is pickled in
    job = lambda i: (offset + i).tolist()  # noqa: E731
    seen: list[int] = []
    got = workers.forked_map(job, list(range(7)), [1.0] * 7, 2, lambda index, result: seen.append(index))
    assert got == [job(i) for i in range(7)]
    assert sorted(seen) == list(range(7))


def test_a_worker_free_before_its_share_ends_takes_the_next_item():
    """Item 0 runs until items 1-3 are back (predicted as cheap as they are): shared out in
    advance, its worker would also hold item 2 and wait forever; pulled, the other worker runs
    1, 2 and 3 and the first one finishes."""
    others_done = multiprocessing.get_context("fork").Event()
    back: list[int] = []

    def job(i: int) -> bool:
        return others_done.wait(timeout=120) if i == 0 else True

    def arrived(index: int, result: bool) -> None:
        back.append(index)
        if sorted(back) == [1, 2, 3]:
            others_done.set()

    assert workers.forked_map(job, [0, 1, 2, 3], [1.0] * 4, 2, arrived) == [True] * 4
    assert back[-1] == 0


def test_an_error_in_a_worker_is_raised_here_with_its_traceback():
    def job(i: int) -> int:
        if i == 3:
            raise ValueError("item 3 is bad")
        return i

    with pytest.raises(ValueError, match="item 3 is bad") as raised:
        workers.forked_map(job, list(range(5)), [1.0] * 5, 2)
    assert any("report worker" in note for note in getattr(raised.value, "__notes__", []))


def test_one_worker_runs_here_in_order():
    seen: list[int] = []
    assert workers.forked_map(lambda i: i * i, [1, 2, 3], [1.0] * 3, 1, lambda i, r: seen.append(i)) == [
        1,
        4,
        9,
    ]
    assert seen == [0, 1, 2]


def test_tasks_side_by_side_give_the_tables_of_tasks_one_after_another():
    model = load_model("organism")
    options = compute.ReportOptions(tasks=("ioi", "seq-digits", "induction"), n=12, n_boot=20, circuit_n=4)
    found = plan.plan_report(model, None, options, rate=RATE, workers=1, **QUIET)
    alone = plan.run_plan(found, **QUIET)
    said: list[str] = []
    together = plan.run_plan(dataclasses.replace(found, workers=2), said.append)
    assert sorted(together.tables) == sorted(alone.tables)
    for name, table in alone.tables.items():  # the same computation on the same thread count
        pdt.assert_frame_equal(together.tables[name], table, check_exact=True, obj=name)
    starts = [line for line in said if re.fullmatch(r"task \S+: \d+ prompts", line)]
    assert [line.split(":")[0] for line in starts] == ["task ioi", "task seq-digits", "task induction"]


def test_in_order_holds_a_result_until_the_earlier_ones_arrive():
    seen: list[tuple[int, str]] = []
    arrived = workers.in_order(lambda index, result: seen.append((index, result)))
    for index in (2, 0, 3, 1):
        arrived(index, f"r{index}")
    assert seen == [(0, "r0"), (1, "r1"), (2, "r2"), (3, "r3")]


def test_the_plans_wall_time_is_the_model_phases_and_the_longest_share():
    from headscope.report.phases import Phase, wall_seconds

    phases = [Phase("OV pass", "", 1, "rows", 0.0, 2.0)]
    phases += [
        Phase(name, task, 1, "prompts", 0.0, s)
        for task, s in (("a", 5), ("b", 4), ("c", 1))
        for name in ("x", "y")
    ]
    assert wall_seconds(phases, 1) == pytest.approx(2.0 + 20.0)
    # shares: a (10) | b (8) + c (2): the longest is 10, over the efficiency of two processes
    assert wall_seconds(phases, 2) == pytest.approx(2.0 + 10.0 / workers.PARALLEL_EFFICIENCY)

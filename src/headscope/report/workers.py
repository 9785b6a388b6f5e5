"""The report's tasks side by side in forked processes, when the model runs on one CPU thread and
more cores are idle: a small model (the organism, below `models.devices.THREADED_WIDTH`) spends
its time in Python and small products that one thread runs fastest, so a second task beside it
uses the second core; a wide model already uses every core for each product and runs its tasks
one after another (`task_workers` gives 1).

`forked_map` forks its workers (the standard library's `multiprocessing` with the fork start
method: a child starts with the parent's memory, the model included, so nothing large is
pickled on the way in); each child takes the next item not yet taken, largest predicted cost
(the plan's seconds) first, from a counter the children share, and sends each result back
through a pipe: a worker whose items ran faster than predicted takes more. With exact
predictions this is the plan's `shares` (largest first to the least loaded worker). A result
equals the one computed in the parent: the same computation on the same thread count; every
analysis seeds its own randomness.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import TypeVar

import torch

from headscope.models.devices import idle_cores

# A share's time alone / beside another on the other core: the organism's tasks 41.8 s in one
# process, 22.6 s in two, 21 s a perfect split (quiet 2-vCPU AMD EPYC, docs/methods.md)
PARALLEL_EFFICIENCY = 0.9
T = TypeVar("T")
R = TypeVar("R")


def task_workers(device: torch.device, tasks: int) -> int:
    """How many processes run the report's tasks: 1 unless the model runs on one CPU thread, the
    fork start method exists and at least two cores are idle now; at most one per task."""
    if device.type != "cpu" or torch.get_num_threads() != 1 or tasks < 2:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(idle_cores(), tasks))


def shares(costs: Sequence[float], workers: int) -> list[list[int]]:
    """Item indices per worker: each item, largest predicted cost first, to the worker with the
    least cost so far (ties: the lower worker); each worker's items in their original order."""
    loads = [0.0] * workers
    parts: list[list[int]] = [[] for _ in range(workers)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        worker = min(range(workers), key=lambda w: (loads[w], w))
        loads[worker] += costs[index]
        parts[worker].append(index)
    return [sorted(part) for part in parts if part]


def forked_map(
    job: Callable[[T], R],
    items: Sequence[T],
    costs: Sequence[float],
    workers: int,
    on_result: Callable[[int, R], None] = lambda index, result: None,
) -> list[R]:
    """`[job(item) for item in items]`, in `workers` forked processes (in this one where `workers`
    is 1); `on_result(index, result)` is called in this process as each result arrives. An error
    in a child is raised here with the child's traceback, after the other children are stopped."""
    if workers < 2 or len(items) < 2:
        return [_called(on_result, i, job(item)) for i, item in enumerate(items)]
    context = multiprocessing.get_context("fork")
    order = sorted(range(len(items)), key=lambda i: (-costs[i], i))  # the costliest first
    taken = context.Value("i", 0)  # how many of `order` the workers have taken (with its own lock)
    children = []
    for _ in range(min(workers, len(items))):
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(job, items, order, taken, sender), daemon=True)
        child.start()
        sender.close()  # the parent keeps only the reading end
        children.append((child, receiver))
    try:
        return _collect(children, len(items), on_result)
    finally:
        for child, receiver in children:
            receiver.close()
            if child.is_alive():
                child.terminate()
            child.join()


def in_order(on_result: Callable[[int, R], None]) -> Callable[[int, R], None]:
    """`on_result` called in index order whatever order the results arrive in: a result waits
    until every earlier one has come."""
    waiting: dict[int, R] = {}
    next_index = [0]

    def arrived(index: int, result: R) -> None:
        waiting[index] = result
        while next_index[0] in waiting:
            on_result(next_index[0], waiting.pop(next_index[0]))
            next_index[0] += 1

    return arrived


def _called(on_result: Callable[[int, R], None], index: int, result: R) -> R:
    on_result(index, result)
    return result


def _child(job: Callable, items: Sequence, order: list[int], taken, sender: Connection) -> None:
    """A worker: the next item of `order` no worker has taken, until none is left, each result
    (or the first error) sent back."""
    try:
        while (position := _take(taken)) < len(order):
            index = order[position]
            sender.send((index, True, job(items[index])))
    except BaseException as error:  # noqa: BLE001  # every failure goes back to the parent
        sender.send((-1, False, (error, traceback.format_exc())))
    finally:
        sender.close()
        os._exit(0)  # no atexit handlers of the parent run twice


def _take(taken) -> int:
    """The next position of the shared order, counted as taken."""
    with taken.get_lock():
        position = taken.value
        taken.value = position + 1
    return position


def _collect(children: list, count: int, on_result: Callable) -> list:
    """The results by index, as the children send them."""
    results: dict[int, object] = {}
    open_ends = {receiver for _, receiver in children}
    while len(results) < count:
        if not open_ends:
            raise RuntimeError("a report worker stopped without sending its results")
        for receiver in wait(list(open_ends)):
            try:
                index, ok, value = receiver.recv()
            except EOFError:
                open_ends.discard(receiver)
                continue
            if not ok:
                error, text = value
                raise _with_trace(error, text)
            results[index] = value
            on_result(index, value)
    return [results[i] for i in range(count)]


def _with_trace(error: BaseException, text: str) -> BaseException:
    """The child's error, its traceback noted on it (Python 3.11's add_note)."""
    if hasattr(error, "add_note"):
        error.add_note(f"in a report worker process:\n{text}")
    return error

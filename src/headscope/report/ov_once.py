"""The OV kernel once per report: every task's OV tables and the atlas from one vocabulary pass.

`ov_once(model, tasks, options, say)` gathers what each task's OV step (`analyses.ov.ov_tables`:
the task's relations, both signs, the report's k and embedding) and the atlas (`AtlasOptions(k)`)
will hand the OV kernel, and shares one pass among them (`scores.ov_shared`): the per-head
circuits, the readout and every block of `W_Oc W_gU` are formed once per report instead of once
per task and again for the atlas. The steps themselves run unchanged: each `ov_ranks` call finds
its rows in the shared pass, value for value, or is computed on its own. A task whose inputs
cannot be built here (its step will say why) is simply not in the pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, suppress

from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.scores import atlas, ov
from headscope.scores.ov_shared import KernelCall, KernelSettings, SharedKernel, shared_ov_kernel
from headscope.tasks.dataset import build_dataset
from headscope.tasks.task import Task


def ov_once(
    model: Model, tasks: Sequence[Task], options, say: Callable[[str], None]
) -> AbstractContextManager[SharedKernel]:
    """A `with` block in which the report's OV steps and atlas share one kernel pass (`options`:
    the report's, read for n, seed, k and embedding)."""
    calls: list[tuple[KernelCall, KernelSettings]] = []
    for task in tasks:
        ov_options = ov.OVOptions(tuple(task.relations), options.k, options.embedding, negative=True)
        try:  # the context embedding: block 0 alone, the pass the task's capture begins with
            dataset = build_dataset(task, model.tokens, options.n, options.seed)
            calls.append(ov.kernel_call(model, dataset, ov_options))
        except (HeadscopeError, ValueError):
            continue
    with suppress(HeadscopeError):  # the atlas step says why it is left out
        calls.append(atlas.kernel_call(model, None, atlas.AtlasOptions(k=options.k)))
    settings = calls[0][1] if calls else None
    kept = [call for call, its in calls if its == settings]
    rows = sum(call.x.shape[0] for call in kept)
    if len(kept) > 1:
        say(f"OV kernel: one pass over the vocabulary for {len(kept)} score sets ({rows} rows)")
    return shared_ov_kernel(model.weights, kept if len(kept) > 1 else [], settings, now=True)

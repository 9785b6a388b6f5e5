"""The knockout sweep's progress bar counts blocks run, so its ETA holds; it ends at its total."""

from __future__ import annotations

import pytest

from headscope.scores import interventions
from headscope.scores.ablation import AblationOptions, knockout_sweep
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task


class Recorder:
    """A stand-in for tqdm that keeps its total and every update."""

    made: list[Recorder] = []

    def __init__(self, *args, total=None, **kwargs):
        self.total, self.updates = total, []
        Recorder.made.append(self)

    def update(self, count):
        self.updates.append(count)

    def close(self):
        pass


def test_blocks_run_counts_the_layers_each_resumed_pass_runs(tiny_model):
    runner = interventions.InterventionRunner(tiny_model.bridge)
    n = tiny_model.n_layers
    assert runner.sequential  # GPT-2 blocks: an MLP resumes at the next block
    assert [interventions.blocks_run(interventions.Site(layer, 0), runner) for layer in range(n)] == list(
        range(n, 0, -1)
    )
    mlps = [interventions.blocks_run(interventions.Site(layer, None), runner) for layer in range(n)]
    assert mlps == [*range(n - 1, 0, -1), 1]  # the last MLP: the final norm and unembedding only


@pytest.mark.parametrize("batch_size", [3, 10])
def test_the_knockout_bar_reaches_its_total(tiny_model, monkeypatch, batch_size):
    monkeypatch.setattr(interventions, "tqdm", Recorder)
    Recorder.made.clear()
    dataset = build_dataset(get_task("seq-digits"), tiny_model.tokens, 7, 0)
    knockout_sweep(tiny_model, dataset, AblationOptions(batch_size=batch_size))
    (bar,) = Recorder.made
    n, heads = tiny_model.n_layers, tiny_model.n_heads
    per_batch = heads * sum(range(1, n + 1)) + sum(range(1, n)) + 1  # heads, then MLPs
    batches = -(-dataset.n // batch_size)
    assert bar.total == sum(bar.updates) == per_batch * batches

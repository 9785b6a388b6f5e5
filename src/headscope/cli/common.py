"""Loading shared by commands: the model and a task's dataset, with progress on the console."""

from __future__ import annotations

from headscope.cli.app import console, state
from headscope.models.loading import Model, load_model
from headscope.tasks.dataset import Dataset, build_dataset
from headscope.tasks.registry import get_task


def load(model: str, allow_pickle: bool = False) -> Model:
    with console.status(f"loading model {model} ..."):
        return load_model(model, allow_pickle=allow_pickle or state.allow_pickle)


def dataset_for(model: Model, task: str, n: int, seed: int) -> Dataset:
    """The dataset of a task for a model's tokenizer; says how many prompts were dropped."""
    dataset = build_dataset(get_task(task), model.tokens, n, seed)
    if dataset.dropped:
        console.print(
            f"[yellow]{dataset.dropped} of {n} prompts dropped: a filler is not one token "
            "for this tokenizer[/yellow]"
        )
    return dataset

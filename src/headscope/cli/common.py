"""Loading shared by commands: the model and a task's dataset, with progress on stderr."""

from __future__ import annotations

from headscope.cli.app import Shared, note, state, working
from headscope.errors import HeadscopeError
from headscope.models.devices import resolve_device
from headscope.models.loading import Model, load_model
from headscope.models.memory import check_fits
from headscope.models.streamed import StreamedModel, stream_model
from headscope.tasks.dataset import Dataset, build_dataset
from headscope.tasks.registry import get_task


def load(model: str, allow_pickle: bool = False, streamable: bool = False) -> Model:
    """The model, on the running command's --device, in its --dtype, with its --threads; refused
    before anything is read where it cannot fit in the memory available (`memory.check_fits`;
    `streamable`: the command can read the weights streamed instead, --stream)."""
    shared = state.shared or Shared()
    check_fits(model, shared.dtype, shared.device_map is not None, resolve_device(shared.device), streamable)
    with working(f"loading model {model} ..."):
        return load_model(
            model,
            allow_pickle=allow_pickle or state.allow_pickle,
            device=shared.device,
            dtype=shared.dtype,
            threads=shared.threads,
            device_map=shared.device_map,
            max_memory=shared.max_memory,
            offload_folder=shared.offload_folder,
        )


def load_streamed(model: str) -> StreamedModel:
    """The model's weights streamed from its folder (--stream), in its --dtype, with its --threads;
    the placement options, which place a booted model, are refused."""
    shared = state.shared or Shared()
    placed = {"--device": shared.device not in ("auto", "cpu"), "--device-map": shared.device_map is not None}
    placed |= {
        "--max-memory": shared.max_memory is not None,
        "--offload-folder": shared.offload_folder is not None,
    }
    named = [flag for flag, given in placed.items() if given]
    if named:
        raise HeadscopeError(
            f"{named[0]} with --stream: a streamed model's weights are read to the CPU layer by layer; "
            f"drop {named[0]}, or drop --stream to load the model whole"
        )
    with working(f"streaming the weights of {model} ..."):
        return stream_model(model, shared.dtype, shared.threads)


def dataset_for(model: Model, task: str, n: int, seed: int) -> Dataset:
    """The dataset of a task for a model's tokenizer; says how many prompts were dropped."""
    with working(f"building {n} prompts of task {task} ..."):
        dataset = build_dataset(get_task(task), model.tokens, n, seed)
    if dataset.dropped:
        note(f"{dataset.dropped} of {n} prompts dropped: a filler is not one token for this tokenizer")
    return dataset


def shared_dataset(model: Model, shared: Shared) -> Dataset:
    """The dataset of the shared --task, --n and --seed."""
    return dataset_for(model, shared.task, shared.n, shared.seed)

"""Fixtures: a tiny organism saved at four points of its own training recipe, a tiny Llama of
another family, and a broken model folder; and one sweep over all six on a local Ray instance."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from headscope.models.organism.train import Checkpoints, TrainConfig, train
from tests.models.families import BY_NAME, save_family

TASKS = ("induction", "seq-digits")
N = 12
# The organism's recipe at a fraction of its width: 3 steps, saved after each (and before the first).
TINY_RECIPE = replace(TrainConfig(), steps=3, n_embd=32, n_inner=64, warmup=1)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """(folder of step-00000 .. step-00003, the final model) of the tiny training run."""
    root = tmp_path_factory.mktemp("organism-training")
    train(TINY_RECIPE, root / "final", Checkpoints(root / "checkpoints", 1))
    return root / "checkpoints", root / "final"


@pytest.fixture(scope="session")
def models(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """name -> folder: the four checkpoints, a tiny Llama and a folder with no weights."""
    folder, _ = checkpoints
    found = {path.name: path for path in sorted(folder.iterdir())}
    others = tmp_path_factory.mktemp("others")  # names without a number: no step parsed
    found["tiny-llama"] = save_family(BY_NAME["llama"], others / "tiny-llama")
    broken = others / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2"}')
    found["broken-model"] = broken
    return found


@pytest.fixture(scope="session")
def ray_sweep(models, tmp_path_factory):
    """One sweep of every model on a local Ray instance (2 jobs at once), with its stderr lines."""
    import headscope as hs

    lines: list[str] = []
    out = tmp_path_factory.mktemp("sweep") / "out"
    result = hs.sweep([str(p) for p in models.values()], TASKS, out, n=N, jobs=2, say=lines.append)
    return result, lines

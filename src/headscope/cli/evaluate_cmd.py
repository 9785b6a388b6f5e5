"""`headscope evaluate`: accuracy, mean logit difference and answer probability on a task."""

from __future__ import annotations

import pandas as pd

from headscope.capture import capture
from headscope.cli.app import (
    DEFAULT_MODEL,
    DEFAULT_N,
    DEFAULT_SEED,
    ModelOpt,
    NOpt,
    OutOpt,
    SeedOpt,
    TaskOpt,
    app,
    console,
    print_table,
)
from headscope.cli.common import dataset_for, load
from headscope.errors import HeadscopeError
from headscope.io import check_writable, write_json
from headscope.scores.evaluate import EVALUATE_NEEDS, evaluate


def result_table(result: dict) -> pd.DataFrame:
    """The result as metric / value rows, numbers formatted (n as an integer)."""
    values = [f"{result[key]:.4f}" for key in ("accuracy", "logit_diff", "answer_prob")]
    return pd.DataFrame(
        {"metric": ["accuracy", "logit_diff", "answer_prob", "n"], "value": [*values, str(result["n"])]}
    )


@app.command("evaluate")
def evaluate_command(
    model: ModelOpt = DEFAULT_MODEL,
    task: TaskOpt = "ioi",
    n: NOpt = DEFAULT_N,
    seed: SeedOpt = DEFAULT_SEED,
    out: OutOpt = None,
) -> None:
    """How well the model does a task: top-1 accuracy, logit difference, answer probability."""
    if out is not None and out.suffix != ".json":
        raise HeadscopeError(f"--out {out}: evaluate writes JSON; use a .json file name")
    if out is not None:
        check_writable(out)
    loaded = load(model)
    dataset = dataset_for(loaded, task, n, seed)
    result = evaluate(dataset, capture(loaded, dataset, EVALUATE_NEEDS))
    print_table(result_table(result), title=f"{model} on {task}")
    if out is not None:
        meta = {"model": model, "task": task, "seed": seed, "dropped": dataset.dropped}
        write_json(out, result | meta)
        console.print(f"wrote {out}")

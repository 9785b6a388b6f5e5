"""`headscope evaluate`: accuracy, mean logit difference and answer probability on a task."""

from __future__ import annotations

import pandas as pd

from headscope.analyses.logits import EVALUATION
from headscope.cli.app import Shared, command, print_table, working, wrote
from headscope.cli.common import load, shared_dataset
from headscope.errors import HeadscopeError
from headscope.files import check_writable, write_json


def result_table(result: dict) -> pd.DataFrame:
    """The result as metric / value rows, numbers formatted (n as an integer)."""
    values = [f"{result[key]:.4f}" for key in ("accuracy", "logit_diff", "answer_prob")]
    return pd.DataFrame(
        {"metric": ["accuracy", "logit_diff", "answer_prob", "n"], "value": [*values, str(result["n"])]}
    )


@command("evaluate", task="ioi")
def evaluate_command(shared: Shared) -> None:
    """How well the model does a task: top-1 accuracy, logit difference, answer probability."""
    out = shared.out
    if out is not None and out.suffix != ".json":
        raise HeadscopeError(f"--out {out}: evaluate writes JSON; use a .json file name")
    if out is not None:
        check_writable(out)
    loaded = load(shared.model)
    dataset = shared_dataset(loaded, shared)
    with working(f"running {dataset.n} prompts ..."):
        result = EVALUATION.run(loaded, dataset).drop(columns="dropped").to_dict("records")[0]
    print_table(result_table(result), title=f"{shared.model} on {shared.task}")
    if out is not None:
        meta = {"model": shared.model, "task": shared.task, "seed": shared.seed, "dropped": dataset.dropped}
        write_json(out, result | meta)
        wrote(out)

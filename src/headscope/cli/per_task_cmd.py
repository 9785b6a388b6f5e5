"""Commands of the core's per-task analyses: `headscope <command>` for each `PerTask` listed here.

Each command builds the task's prompts, runs the analysis (`PerTask.run`: one capture of its
`Needs`), prints its table and writes it with --out (.csv or .json). Adding an analysis of one
capture to the command line is one line in `COMMANDS`.
"""

from __future__ import annotations

from headscope.analyses.attention import ATTENTION_ENTROPY
from headscope.analyses.record import PerTask
from headscope.cli.app import Shared, command, print_table, working, wrote
from headscope.cli.common import load, shared_dataset
from headscope.files import check_table_path, write_table

COMMANDS: tuple[PerTask, ...] = (ATTENTION_ENTROPY,)
DEFAULT_TASK = "ioi"


def register(analysis: PerTask) -> None:
    """`headscope <analysis.command>` with the shared options; its help is the doc's first line."""

    def run(shared: Shared) -> None:
        if shared.out is not None:
            check_table_path(shared.out)  # suffix and folder, before anything is computed
        loaded = load(shared.model)
        dataset = shared_dataset(loaded, shared)
        with working(f"{analysis.name} on {dataset.n} prompts ..."):
            table = analysis.run(loaded, dataset)
        print_table(table, title=f"{analysis.name} on {shared.task}")
        if shared.out is not None:
            wrote(write_table(shared.out, table))

    run.__doc__ = analysis.doc.strip().splitlines()[0]
    run.__name__ = analysis.name
    command(analysis.command, task=DEFAULT_TASK)(run)


for _analysis in COMMANDS:
    register(_analysis)

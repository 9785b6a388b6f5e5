"""The analyses, each defined once: what it captures, what it checks, the table it returns.

This stage sits between the scores and the run (task -> dataset -> capture -> scores ->
analyses -> run -> report). A score module is a pure function of captured activations; an
analysis here is the whole of one result as every front end asks for it: the `Needs` it reads
(so a caller sharing one capture takes their union), the checks of its options and of the
dataset (a corrupted twin, roles), and its table. The three front ends call these functions
and only convert arguments and present the results:

- `headscope.api` (`hs.<name>`): Python arguments in, a DataFrame with `.attrs` out;
- `headscope.cli.*_cmd`: flags in, a printed table and `--out` files out;
- `headscope.report.compute`: one capture per task, every analysis on it, tables for a Run.

An analysis of one capture with no options of its own is a `PerTask` record (`record.py`):
each front end registers it with one line (`api.per_task`, `cli.per_task_cmd.COMMANDS`,
`report.compute.CAPTURE_STEPS`).
"""

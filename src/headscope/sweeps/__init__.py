"""Sweeps: one report run per model or checkpoint, on Ray, lined up in one table and one page.

`hs.sweep(models, tasks, out)` and `headscope sweep` plan one job per model (plan.py), run each
job (job.py: load the model, `report.compute.build_run`, `report.html.write_report` into its own
folder) on a local Ray instance, a user's Ray cluster or one after another in this process
(engine.py), then read every finished folder back and write the cross-model tables
(tables.py) and the page (page.py). core.py ties these together.
"""

"""The sweep's page: one self-contained HTML file (plotly inlined, no network).

It shows the models x tasks summary (top-1 accuracy, labelled heads, failures in one line each),
per family of checkpoints the trajectory of every head's scores against the step (a menu picks
task and score; labelled heads in colour) and when each label first appears, and links to each
model's own report page. Every string reaches the page through jinja2's autoescape or
`script_json`.
"""

from __future__ import annotations

import json

import jinja2
import pandas as pd
import plotly.io
import plotly.offline

from headscope.heads import head_names
from headscope.report.html import script_json
from headscope.sweeps.figures import trajectory_figure

PAGE_FILE = "index.html"

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>headscope sweep</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.failed{color:#b00}.note{color:#666;font-size:14px}
</style>
<script>{{ plotly_js|safe }}</script></head><body>
<h1>headscope sweep</h1>
<p class="note">{{ counts }}; tasks: {{ tasks }}. Each model's own report: the links in the first column.</p>
<h2>Models &times; tasks</h2>
<p class="note">Top-1 accuracy per task; labelled heads as layer.head.</p>
<table><tr><th>model</th><th>step</th>
{% for t in task_names %}<th>{{ t }}</th>{% endfor %}<th>labels</th></tr>
{% for row in grid %}<tr>
<td>{% if row.link %}<a href="{{ row.link }}">{{ row.name }}</a>{% else %}{{ row.name }}{% endif %}</td>
<td>{{ row.step }}</td>{% for cell in row.cells %}<td>{{ cell }}</td>{% endfor %}
<td>{{ row.labels }}</td></tr>
{% endfor %}</table>
{% if failed %}<h2>Failed</h2><ul>
{% for line in failed %}<li class="failed">{{ line }}</li>{% endfor %}</ul>{% endif %}
{% for family in families %}
<h2>Trajectories: {{ family.name }}</h2>
<p class="note">Every head's score at each checkpoint, one line per head; heads labelled at some step are
in colour. The menu picks the task and score.</p>
<div class="hs-figure" id="fig{{ loop.index }}"></div>
<script>(function(){var f={{ family.spec|safe }};
Plotly.newPlot("fig{{ loop.index }}",f.data,f.layout);})();</script>
<h3>When each label first appears</h3>
<table><tr><th>task</th><th>label</th><th>head</th><th>first step</th><th>last step</th>
<th>labelled at</th><th>at the end</th></tr>
{% for r in family.first %}<tr><td>{{ r.task }}</td><td>{{ r.label }}</td><td>{{ r.name }}</td>
<td>{{ r.first_step }}</td><td>{{ r.last_step }}</td><td>{{ r.labelled }} of {{ r.of }}</td>
<td>{{ "yes" if r.at_end else "no" }}</td></tr>
{% endfor %}</table>
{% endfor %}
</body></html>
"""


def render_sweep_page(tables: dict[str, pd.DataFrame], summary: pd.DataFrame) -> str:
    """The page's HTML from the sweep's tables and its summary (one row per job)."""
    evaluation, labels, heads, first = (tables[n] for n in ("evaluation", "labels", "heads", "first_labels"))
    task_names = list(dict.fromkeys(evaluation["task"])) if not evaluation.empty else []
    families = []
    for family in dict.fromkeys(heads.loc[heads["step"].notna(), "family"]):
        if heads.loc[heads["family"] == family, "step"].nunique() < 2:
            continue
        spec = json.loads(plotly.io.to_json(trajectory_figure(heads, first, family), validate=False))
        mine = first[first["family"] == family]
        rows = mine.assign(name=head_names(mine["layer"], mine["head"])).to_dict("records")
        families.append({"name": family, "spec": script_json(spec), "first": rows})
    counts = summary["status"].value_counts()
    template = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(TEMPLATE)
    return template.render(
        plotly_js=plotly.offline.get_plotlyjs(),
        counts=", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "skipped", "failed"))
        + f" of {len(summary)} models",
        tasks=", ".join(task_names) or "none",
        task_names=task_names,
        grid=_grid(summary, evaluation, labels, task_names),
        failed=[f"{r.name}: {r.error}" for r in summary.itertuples(index=False) if r.status == "failed"],
        families=families,
    )


def _grid(
    summary: pd.DataFrame, evaluation: pd.DataFrame, labels: pd.DataFrame, tasks: list[str]
) -> list[dict]:
    rows = []
    for job in summary.itertuples(index=False):
        mine = evaluation[evaluation["model"] == job.model] if not evaluation.empty else evaluation
        accuracy = dict(zip(mine["task"], mine["accuracy"], strict=True)) if not mine.empty else {}
        cells = [
            f"{accuracy[t]:.2f}" if t in accuracy else ("failed" if job.status == "failed" else "")
            for t in tasks
        ]
        named = labels[labels["model"] == job.model] if not labels.empty else labels
        text = "; ".join(
            f"{label}: {', '.join(head_names(group['layer'], group['head']))}"
            for label, group in named.drop_duplicates(["label", "layer", "head"]).groupby("label", sort=True)
        ) if not named.empty else ""  # fmt: skip
        link = f"{job.folder}/index.html" if job.status != "failed" else ""
        step = "" if pd.isna(job.step) else int(job.step)
        rows.append({"name": job.name, "step": step, "cells": cells, "labels": text, "link": link})
    return rows

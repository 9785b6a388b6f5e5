"""headscope: what does each attention head of a transformer do on a task?

    import headscope as hs
    model = hs.load_model("organism")
    scores = hs.ov_scores(model, "seq-digits", relations="next", n=200)   # a DataFrame
    hs.plot.heatmap(scores)                                               # a plotly Figure

Every analysis is `hs.<name>(model, task, **options)`, where `task` is a task name, a `Task`,
a TOML file path or a built `Dataset`, and returns a DataFrame (extra results in `.attrs`); see
`headscope.api`. The lower-level functions that share one capture between scores keep their
module paths (`headscope.scores.ov.ov_scores(model, dataset, options, capture)`, ...).

The public API (0.1.0) is the explicit list below, `__all__`, and nothing else; names are imported
on first use, so that `import headscope` (and the command line) starts without loading every stage.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # tasks and datasets
    "get_task": "headscope.tasks.registry",
    "builtin_tasks": "headscope.tasks.registry",
    "load_task_file": "headscope.tasks.toml_task",
    "build_dataset": "headscope.tasks.dataset",
    "Dataset": "headscope.tasks.dataset",
    "Task": "headscope.tasks.task",
    # models
    "load_model": "headscope.models.loading",
    "Model": "headscope.models.loading",
    # capture (the function itself: headscope.capture.capture; the name is the module's)
    "Needs": "headscope.capture",
    "Capture": "headscope.capture",
    # notebook analyses: (model, task, **options) -> DataFrame
    "dataset": "headscope.api",
    "ov_scores": "headscope.api",
    "role_attention": "headscope.api",
    "head_detectors": "headscope.api",
    "attention_entropy": "headscope.api",
    "attention_patterns": "headscope.api",
    "scatter": "headscope.api",
    "direct_logit_attribution": "headscope.api",
    "evaluate": "headscope.api",
    "ablate": "headscope.api",
    "keep_circuit": "headscope.api",
    "greedy_circuit": "headscope.api",
    "patch": "headscope.api",
    "attribution_patch": "headscope.api",
    "edge_attribution": "headscope.api",
    "circuit": "headscope.api",
    "qk_attribution": "headscope.api",
    "label_heads": "headscope.api",
    # weights only, no task: (model, **options) -> DataFrame
    "composition_scores": "headscope.api",
    "atlas": "headscope.api",
    # options and helpers of the lower-level functions
    "OVOptions": "headscope.scores.ov",
    "keyword_dataset": "headscope.scores.keywords",
    "scatter_stats": "headscope.scores.scatter",
    "AblationOptions": "headscope.scores.ablation",
    "LabelThresholds": "headscope.scores.labels",
    # sweeps: many models or checkpoints, on Ray
    "sweep": "headscope.sweeps.core",
    "SweepResult": "headscope.sweeps.core",
    # runs
    "Run": "headscope.run",
    "load_run": "headscope.run",
    # errors
    "HeadscopeError": "headscope.errors",
}

# hs.plot.heatmap(...), ...; hs.report(model, tasks=None, out=None, budget=...) -> Run: the report
# package is callable (headscope.report.plan.report), as the package's name is taken by it
_MODULES: dict[str, str] = {"plot": "headscope.plot", "report": "headscope.report"}

__all__ = sorted([*_EXPORTS, *_MODULES])


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    if name not in _EXPORTS:
        raise AttributeError(f"module 'headscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""headscope: what does each attention head of a transformer do on a task?

    import headscope as hs
    model = hs.load_model("organism")
    data = hs.build_dataset(hs.get_task("seq-digits"), model.tokens, n=200, seed=0)
    table = hs.ov_scores(model, data, hs.OVOptions(relations=("copy", "next"))).table

The public API is the explicit list below; names are imported on first use, so that
`import headscope` (and the command line) starts without loading every stage.
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
    # scores
    "OVOptions": "headscope.scores.ov",
    "ov_scores": "headscope.scores.ov",
    "keyword_dataset": "headscope.scores.keywords",
    "role_attention": "headscope.scores.attention",
    "head_detectors": "headscope.scores.attention",
    "scatter_points": "headscope.scores.scatter",
    "scatter_stats": "headscope.scores.scatter",
    "direct_logit_attribution": "headscope.scores.attribution",
    "evaluate": "headscope.scores.evaluate",
    "label_heads": "headscope.scores.labels",
    "AblationOptions": "headscope.scores.ablation",
    "ablate": "headscope.scores.ablation",
    "keep_circuit": "headscope.scores.ablation",
    "greedy_circuit": "headscope.scores.ablation",
    "patch": "headscope.scores.patching",
    "attribution_patch": "headscope.scores.patching",
    # runs
    "Run": "headscope.run",
    "load_run": "headscope.run",
    # errors
    "HeadscopeError": "headscope.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'headscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

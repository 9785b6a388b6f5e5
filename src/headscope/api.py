"""The notebook API: every analysis is `hs.<name>(model, task, **options)` and returns a DataFrame.

`task` is a built-in task name (`"ioi"`), a `Task`, the path of a TOML task file, or a `Dataset`
already built (then `n` and `seed` are not needed). Options that take several names accept one
string or a sequence (`relations="next"` is `("next",)`, `"copy,next"` is `("copy", "next")`).
Extra results (the per-token table, the clean metric, ...) are in the frame's `.attrs`, next to
the task, the number of prompts and the model's shape. Each call runs the forward passes it
needs; errors name the Python argument to change.

`model` is what `hs.load_model` returns, or a model the notebook already holds: a TransformerLens
`TransformerBridge`, or a Hugging Face model with its tokenizer as a pair `(hf_model, tokenizer)`;
every analysis turns it into headscope's `Model` in one place (`models.loading.as_model`, applied
at the end of this module), with the load-time checks of a folder.

The functions called here keep their own signatures under their module paths, for code that
shares one capture between scores (`headscope.scores.ov.ov_scores(model, dataset, options,
capture)` and the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd

from headscope.analyses import atlas as _atlas
from headscope.analyses import attention as _attention
from headscope.analyses import logits as _logits
from headscope.analyses import ov as _ov
from headscope.analyses.record import integer
from headscope.api_causal import (
    ablate,
    attribution_patch,
    circuit,
    edge_attribution,
    greedy_circuit,
    keep_circuit,
    patch,
    qk_attribution,
)
from headscope.api_common import (
    AttachedTable,
    HeadsLike,
    Names,
    TaskLike,
    attach,
    dataset,
    heads_of,
    one_head,
    per_task,
    take_models_in_memory,
)
from headscope.errors import HeadscopeError
from headscope.models.loading import Model, as_model
from headscope.models.streamed import stream_model
from headscope.options import names
from headscope.scores import composition as _composition
from headscope.scores.atlas import AtlasOptions
from headscope.scores.labels import LabelThresholds

# ---- OV scores -------------------------------------------------------------------------------


def ov_scores(
    model: Model,
    task: TaskLike,
    relations: Names | None = None,
    k: int = 5,
    embedding: Literal["context", "token", "block0"] = "context",
    negative: bool = False,
    heads: HeadsLike = None,
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """OV relation scores (docs/methods.md §2): would head l.h, attending fully to keyword t, write f(t)?

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        relations: "copy", "next", "prev" or a mapping of the task; one string or a list
            (default: the relations the task defines).
        k: a hit when a target token is among the head's top-k logits.
        embedding: "context" (block 0's output in the prompt), "token" or "block0".
        negative: also score sign -1 (negative copy: the target among the bottom k).
        heads: "all" (default), "9.1,8.8", (9, 1) or a list of either.
        n, seed: prompts to build and the generator's seed.

    Returns:
        One row per head x relation x sign: `layer, head, relation, sign, k, embedding, score,
        hits, n, ci_low, ci_high, ci_kind` (the score's 95% interval, docs/methods.md §C);
        `.attrs["per_token"]` (every keyword instance: target, rank, hit, top-k tokens)
        and `.attrs["categories"]` (share of the top-k slots per word category).

    Example:
        >>> scores = hs.ov_scores(model, "seq-digits", relations="next", n=20)
        >>> scores.sort_values("score", ascending=False).head(3)
    """
    data = dataset(model, task, n, seed)
    chosen = None if relations is None else names(relations, "relations")
    result = _ov.ov_scores(model, data, chosen, k, embedding, negative, heads_of(model, heads))
    return attach(result.table, model, data, per_token=result.per_token, categories=result.categories, k=k)


# ---- attention ---------------------------------------------------------------------------------


role_attention = per_task(_attention.ROLE_ATTENTION)
head_detectors = per_task(_attention.HEAD_DETECTORS)
attention_entropy = per_task(_attention.ATTENTION_ENTROPY)


def attention_patterns(
    model: Model, task: TaskLike, heads: HeadsLike = None, prompts: int | Sequence[int] = 0, n=None, seed=0
) -> pd.DataFrame:
    """Whole attention patterns of chosen heads on chosen prompts, in long form.

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        heads: "all" (default), "9.1,8.8", (9, 1) or a list of either.
        prompts: the index of a prompt of the dataset, or several.
        n, seed: prompts to build and the generator's seed.

    Returns:
        `prompt, layer, head, destination, destination_token, source, source_token, attention`
        (the causal half: source <= destination); `.attrs["texts"]` maps prompt -> its text.

    Example:
        >>> patterns = hs.attention_patterns(model, "induction", heads="2.0", n=4)
        >>> hs.plot.attention(patterns)
    """
    data = dataset(model, task, n, seed)
    indices = [prompts] if isinstance(prompts, int) else list(prompts)
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < data.n:
            raise HeadscopeError(f"prompts={prompts!r}: give prompt indices 0-{data.n - 1}")
    chosen = heads_of(model, heads) or [(la, h) for la in range(model.n_layers) for h in range(model.n_heads)]
    table = _attention.attention_patterns(model, data, chosen, indices)
    return attach(table, model, data, texts={i: data.prompts[i].text for i in indices})


# ---- scatter, attribution, evaluation ------------------------------------------------------------


def scatter(
    model: Model,
    task: TaskLike,
    head: str | Head,
    roles: Names | None = None,
    scale: Literal["none", "ln_final"] = "none",
    n_boot: int = 1000,
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One head's attention to a role's token vs. its output along that token (docs/methods.md §4).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        head: the head, "1.0" or (1, 0).
        roles: roles or groups, one string or a list (default: the answer role and the group of
            the contrast role, IOI's IO and S).
        scale: "none" (the IOI paper's projection) or "ln_final" (divided by the final norm's
            scale: the head's direct logit contribution).
        n_boot: bootstrap resamples for the 95% interval of r (drawn with `seed`).
        n, seed: prompts to build and the generator's seed.

    Returns:
        The points, one row per prompt and role: `prompt, role, token, word, attention,
        projection`; `.attrs["stats"]` holds Pearson r, p, n and the interval per role and pooled.

    Example:
        >>> points = hs.scatter(model, "ioi", head="1.0", n=50)
        >>> points.attrs["stats"]
        >>> hs.plot.scatter(points)
    """
    data = dataset(model, task, n, seed)
    chosen = one_head(model, head)
    role_list = _logits.scatter_roles(data, None if roles is None else names(roles, "roles"))
    points, stats = _logits.scatter(model, data, chosen, role_list, scale, n_boot, seed)
    return attach(points, model, data, stats=stats, head=chosen, scale=scale)


def direct_logit_attribution(
    model: Model, task: TaskLike, n: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """Each component's mean direct contribution to the logit difference (docs/methods.md §5).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        n, seed: prompts to build and the generator's seed.

    Returns:
        `component, kind, layer, head, dla, convention, n, ci_low, ci_high, ci_kind` for `embed`,
        every head `l.h`, every `mlpL` and `bias` (the t interval over the `n` prompts); they sum
        to the mean logit difference, which `.attrs["logit_diff"]` holds.

    Example:
        >>> dla = hs.direct_logit_attribution(model, "ioi", n=50)
        >>> dla.dla.sum(), dla.attrs["logit_diff"]
    """
    data = dataset(model, task, n, seed)
    taken = _logits.captured(model, data, _logits.DLA_NEEDS)
    table = _logits.direct_logit_attribution(model, data, taken)
    logit_diff = float(_logits.EVALUATION.run(model, data, taken)["logit_diff"].iloc[0])
    return attach(table, model, data, logit_diff=logit_diff)


def evaluate(model: Model, task: TaskLike, n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """How well the model does the task, as a one-row DataFrame (rows of several tasks concatenate).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        n, seed: prompts to build and the generator's seed.

    Returns:
        One row: `task, accuracy` (the answer is the top-1 token at `end`), `logit_diff` (mean
        answer - contrast logit), `answer_prob` (mean probability of the answer), `n`, `dropped`.

    Example:
        >>> pd.concat([hs.evaluate(model, t, n=50) for t in ("ioi", "seq-digits")])
    """
    data = dataset(model, task, n, seed)
    row = _logits.EVALUATION.run(model, data)
    return attach(row.assign(task=data.task.name)[["task", *row.columns]], model, data)


# ---- labels ------------------------------------------------------------------------------------------


def label_heads(
    model: Model,
    task: TaskLike,
    thresholds: LabelThresholds | dict | None = None,
    k: int = 5,
    embedding: Literal["context", "token", "block0"] = "context",
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Head labels (name mover, successor, induction, ...) where scores pass thresholds (docs/methods.md §7).

    Computes what the report computes for the labels: the OV scores of the task's relations with
    both signs, role attention, and on the induction task the head detectors.

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        thresholds: a `LabelThresholds`, or a dict of the thresholds to change
            (e.g. `{"copy": 0.6}`).
        k, embedding: of the OV scores, as in `hs.ov_scores`.
        n, seed: prompts to build and the seed.

    Returns:
        One row per (head, label): `layer, head, label, support, weights, attention, behaviour, n,
        p, p_adjusted, ci_low, ci_high, evidence` (each value with its threshold by kind of
        evidence; the tested share's binomial test, BH over every test of the step, docs/methods.md
        §7); `support` lists weights and attention here (`labels.with_support(labels, tables)` adds
        behaviour from knockout, DLA and edge tables); the score tables are in `.attrs["ov_scores"]`
        (with the within-set scores), `["role_attention"]`, `["detectors"]`.

    Example:
        >>> hs.label_heads(model, "ioi", n=50)
    """
    data = dataset(model, task, n, seed)
    limits = _ov.thresholds_of(thresholds)
    tables = _ov.label_tables(model, data, limits, k, embedding)
    labels = tables.pop("labels")
    return attach(labels, model, data, thresholds=limits.as_dict(), **tables)


# ---- weights only: no task ----------------------------------------------------------------------


def composition_scores(model: Model) -> pd.DataFrame:
    """Q-, K- and V-composition scores of every pair of heads, from the weights (no task).

    Args:
        model: from `hs.load_model`.

    Returns:
        One row per (writer head, later reader head, kind): `source, target, kind, score,
        source_layer, target_layer`, scores in [0, 1] (definitions in `headscope.scores.composition`);
        `.attrs`: model, n_layers, n_heads.

    Example:
        >>> comp = hs.composition_scores(model)
        >>> comp[comp.kind == "k"].sort_values("score", ascending=False).head()
    """
    return _composition.composition_scores(model)


def atlas(
    model: Model,
    relations: Names | None = None,
    k: int = 5,
    embedding: Literal["token", "block0"] = "token",
    per_source: bool = False,
    stream: bool = False,
    kernel_dtype: Literal["auto", "float32", "bfloat16"] = "auto",
) -> pd.DataFrame:
    """The head atlas (docs/methods.md §11): every head x relation x sign, from the weights alone.

    Args:
        model: from `hs.load_model`, a model held in memory, or with `stream` a local folder or a
            `.gguf` file.
        relations: relation names, groups ("algorithmic", "linguistic", "knowledge",
            "translation") or TOML files of `[mappings.NAME]` tables; one string (comma-separated)
            or a list (default: the whole library).
        k: top-k score: a hit when the target is among the head's top-k logits.
        embedding: "token" (the token through MLP0) or "block0".
        per_source: also the per-source table (every head, sign and kept pair, with its top-k tokens).
        stream: `model` is a local folder whose weights are read from its safetensors files one
            tensor at a time (models/streamed.py), never loading the model whole; or a GGUF file,
            dequantised one tensor at a time.
        kernel_dtype: precision of the OV kernel's vocabulary products: "float32", "bfloat16"
            (operands in bfloat16, accumulated in float32), or "auto": bfloat16 only for weights
            streamed in bfloat16 on a processor whose bfloat16 products are at least 1.2x as fast
            (measured at the start), else float32.

    Returns:
        One row per head x relation x sign: `layer, head, relation, group, sign, score, within,
        chance, n, dropped`; `.attrs["cards"]` (each head's strongest relations), `.attrs["relations"]`
        (pairs kept per relation for this tokenizer), `.attrs["kernel"]` (the kernel's product
        precision, the rates it was chosen from, and a line saying why) and, with `per_source`,
        `.attrs["per_source"]`.

    Example:
        >>> table = hs.atlas(model, relations="algorithmic")
        >>> table.attrs["cards"].head()
    """
    model = stream_model(model) if stream else as_model(model)  # its own: a folder when streamed
    chosen = None if relations is None else names(relations, "relations")
    options = AtlasOptions(integer(k, "k"), embedding, per_source=bool(per_source), kernel_dtype=kernel_dtype)
    tables = _atlas.atlas_tables(model, chosen, options)
    frame = tables["atlas"]
    frame.attrs.update(model=model.identity.name, n_layers=model.n_layers, n_heads=model.n_heads, k=k)
    extras = {"cards": "atlas_cards", "relations": "atlas_relations", "per_source": "atlas_per_source"}
    for key, name in extras.items():
        if name in tables:
            frame.attrs[key] = AttachedTable(tables[name])
    return frame


__all__ = [
    "AttachedTable",
    "ablate",
    "atlas",
    "attention_entropy",
    "attention_patterns",
    "attribution_patch",
    "circuit",
    "composition_scores",
    "dataset",
    "direct_logit_attribution",
    "edge_attribution",
    "evaluate",
    "greedy_circuit",
    "head_detectors",
    "heads_of",
    "keep_circuit",
    "label_heads",
    "ov_scores",
    "patch",
    "qk_attribution",
    "role_attention",
    "scatter",
]


take_models_in_memory(globals(), [name for name in __all__ if name != "atlas"])  # atlas: above

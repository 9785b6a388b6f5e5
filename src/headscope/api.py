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

import dataclasses
import functools
import inspect
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Literal

import pandas as pd

from headscope.capture import Needs, capture
from headscope.embedding import EMBEDDING_KINDS
from headscope.errors import HeadscopeError
from headscope.heads import Head, parse_head
from headscope.models.loading import Model, as_model
from headscope.options import names
from headscope.scores import ablation as _ablation
from headscope.scores import attention as _attention
from headscope.scores import attribution as _attribution
from headscope.scores import evaluate as _evaluate
from headscope.scores import labels as _labels
from headscope.scores import ov as _ov
from headscope.scores import patching as _patching
from headscope.scores import scatter as _scatter
from headscope.scores.relations import default_relations
from headscope.tasks.dataset import Dataset, build_dataset, dataset_from_pairs
from headscope.tasks.prompt import PromptPair
from headscope.tasks.registry import get_task
from headscope.tasks.task import Task

DEFAULT_N = 200
TaskLike = str | os.PathLike | Task | Dataset
HeadsLike = str | Head | Iterable[str | Head] | None
Names = str | Sequence[str]


class AttachedTable(pd.DataFrame):
    """A table kept in another frame's `.attrs`: shared by the frame's copies, not deep-copied.

    pandas deep-copies `.attrs` on every operation and compares them in `pd.concat`; a plain
    DataFrame there would be copied each time and would make `pd.concat` of two results fail
    ("truth value of a DataFrame is ambiguous"). Everything computed from it is a plain DataFrame.
    """

    def __deepcopy__(self, memo=None) -> AttachedTable:
        return self

    def __eq__(self, other):  # two attached tables are equal when they are the same table
        if isinstance(other, AttachedTable):
            return self is other
        return super().__eq__(other)

    __hash__ = None


# ---- arguments -----------------------------------------------------------------------------


def dataset(model: Model, task: TaskLike, n: int | None = None, seed: int = 0) -> Dataset:
    """The prompts of `task` tokenised for `model` (a Dataset given is returned as it is).

    Args:
        model: from `hs.load_model`.
        task: a built-in task name, a `Task`, a TOML task file path, or a `Dataset`.
        n: prompts to generate (default 200); not with a built `Dataset`.
        seed: seed of the prompt generator.

    Returns:
        The `Dataset` (`len(data)` prompts; pairs whose fillers are not one token each are
        dropped, with a warning).

    Example:
        >>> data = hs.dataset(model, "ioi", n=20)
        >>> len(data), data.prompts[0].text
    """
    if isinstance(task, Dataset):
        if n is not None and n != task.n:
            raise HeadscopeError(
                f"n={n} with a built Dataset of {task.n} prompts: drop n, or pass the task name to build {n}"
            )
        return task
    count = _count(DEFAULT_N if n is None else n, "n")
    spec = _task(task)
    built = build_dataset(spec, model.tokens, count, _integer(seed, "seed"))
    if built.dropped:
        warnings.warn(
            f"task {spec.name}: {built.dropped} of {count} prompts dropped (a filler is not one token "
            "for this tokenizer)",
            stacklevel=3,
        )
    return built


def _task(task) -> Task:
    if isinstance(task, Task):
        return task
    if isinstance(task, str | os.PathLike):
        return get_task(os.fspath(task))
    raise HeadscopeError(f"task={task!r}: give a task name ('ioi'), a Task, a .toml file path or a Dataset")


def _integer(value, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HeadscopeError(f"{argument}={value!r}: give a whole number")
    return value


def _count(value, argument: str, least: int = 1) -> int:
    if _integer(value, argument) < least:
        raise HeadscopeError(f"{argument}={value}: give at least {least}")
    return value


def _choice(value, argument: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise HeadscopeError(f"{argument}={value!r}: choose one of {', '.join(map(repr, choices))}")
    return value


def heads_of(model: Model, heads: HeadsLike) -> tuple[Head, ...] | None:
    """None (every head) for None or 'all'; else (layer, head) pairs from '9.1,8.8', (9, 1) or a list."""
    if heads is None or heads == "all":
        return None
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(x, int) for x in heads):
        heads = [heads]
    items = names(heads, "heads") if isinstance(heads, str) else list(heads)
    found = [_one_head(model, item) for item in items]
    if not found:
        raise HeadscopeError("heads=[] is empty: give heads like '9.1,8.8', (9, 1) or 'all'")
    return tuple(dict.fromkeys(found))


def _one_head(model: Model, item) -> Head:
    text = (
        item if isinstance(item, str) else ".".join(str(x) for x in item) if isinstance(item, tuple) else ""
    )
    if not text:
        raise HeadscopeError(f"heads: {item!r} is not a head; write '9.1' or (9, 1)")
    return parse_head(text, model.n_layers, model.n_heads)


def _attach(frame: pd.DataFrame, model: Model, data: Dataset, **extras) -> pd.DataFrame:
    """`frame` with the task, n, model shape and `extras` (tables kept as AttachedTable) in attrs."""
    frame.attrs.update(task=data.task.name, n=data.n, model=model.identity.name)
    frame.attrs.update(n_layers=model.n_layers, n_heads=model.n_heads)
    for key, value in extras.items():
        frame.attrs[key] = AttachedTable(value) if isinstance(value, pd.DataFrame) else value
    return frame


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
        hits, n`; `.attrs["per_token"]` (every keyword instance: target, rank, hit, top-k tokens)
        and `.attrs["categories"]` (share of the top-k slots per word category).

    Example:
        >>> scores = hs.ov_scores(model, "seq-digits", relations="next", n=20)
        >>> scores.sort_values("score", ascending=False).head(3)
    """
    data = dataset(model, task, n, seed)
    chosen = default_relations(data.task) if relations is None else names(relations, "relations")
    if not chosen:
        raise HeadscopeError(f"task {data.task.name} has no keywords to score: it defines no relation")
    vocab = model.weights.d_vocab
    if _count(k, "k") > vocab:
        raise HeadscopeError(f"k={k} is larger than the vocabulary ({vocab} tokens): choose a smaller k")
    _choice(embedding, "embedding", EMBEDDING_KINDS)
    options = _ov.OVOptions(chosen, k, embedding, bool(negative), heads_of(model, heads))
    result = _ov.ov_scores(model, data, options)
    return _attach(result.table, model, data, per_token=result.per_token, categories=result.categories, k=k)


# ---- attention ---------------------------------------------------------------------------------


def role_attention(model: Model, task: TaskLike, n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Mean attention from each query role to each key role, every head (docs/methods.md §3).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        n, seed: prompts to build and the generator's seed.

    Returns:
        `layer, head, query_role, key_role, attention, n`; a group key (IOI's S) sums its members,
        and the mean runs over the `n` prompts holding both roles.

    Example:
        >>> att = hs.role_attention(model, "ioi", n=20)
        >>> att[(att.query_role == "end") & (att.key_role == "IO")]
    """
    data = dataset(model, task, n, seed)
    taken = capture(model, data, _attention.ROLE_ATTENTION_NEEDS)
    return _attach(_attention.role_attention(data, taken), model, data)


def head_detectors(model: Model, task: TaskLike, n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Previous-token, duplicate-token and induction scores of every head (docs/methods.md §3).

    Each is the share of a head's attention on the ideal pattern, over the query rows where that
    pattern has a key (an ideal head scores 1.0; NaN when no prompt has such a row). The
    induction score needs repeated tokens: use the `induction` task.

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        n, seed: prompts to build and the generator's seed.

    Returns:
        `layer, head, previous_token, duplicate_token, induction`, one row per head.

    Example:
        >>> hs.head_detectors(model, "induction", n=20).sort_values("induction").tail(2)
    """
    data = dataset(model, task, n, seed)
    taken = capture(model, data, _attention.DETECTOR_NEEDS)
    return _attach(_attention.head_detectors(data, taken), model, data)


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
    chosen = list(
        heads_of(model, heads) or [(la, h) for la in range(model.n_layers) for h in range(model.n_heads)]
    )
    twins = data.corrupted.prompts if data.corrupted is not None else data.prompts
    pairs = [PromptPair(data.prompts[i], twins[i]) for i in indices]
    subset = dataset_from_pairs(data.task, pairs, model.tokens)
    full = capture(model, subset, Needs(pattern_full=True, logits_end=False)).pattern_full
    frames = []
    for row, index in enumerate(indices):
        length = int(subset.lengths[row])
        tokens = [model.tokens.decode(int(t)) for t in subset.tokens[row, :length]]
        records = _attention.pattern_records(full[row], chosen, tokens)
        frames.append(records.assign(prompt=index))
    table = pd.concat(frames, ignore_index=True)
    table = table[["prompt", *[c for c in table.columns if c != "prompt"]]]
    return _attach(table, model, data, texts={i: data.prompts[i].text for i in indices})


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
    chosen = _one_head(model, head)
    _choice(scale, "scale", ("none", "ln_final"))
    role_list = _scatter_roles(data, roles)
    taken = capture(model, data, _scatter.SCATTER_NEEDS)
    points = _scatter.scatter_points(model.weights, data, taken, chosen, role_list, scale)
    stats = _scatter.scatter_stats(points, n_boot=_count(n_boot, "n_boot"), seed=seed)
    return _attach(points, model, data, stats=stats, head=chosen, scale=scale)


def _scatter_roles(data: Dataset, roles: Names | None) -> list[str]:
    if roles is not None:
        chosen = names(roles, "roles")
        for role in chosen:
            data.role_names(role)  # an unknown role names the task's roles
        return list(chosen)
    task = data.task
    if task.answer_role is None and task.contrast_role is None:
        raise HeadscopeError(
            f"task {task.name} has no answer or contrast role in its prompts: pass roles=, "
            f"e.g. roles={','.join(task.keyword_roles[:2])!r}"
        )
    return _scatter.default_roles(data)


def direct_logit_attribution(
    model: Model, task: TaskLike, n: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """Each component's mean direct contribution to the logit difference (docs/methods.md §5).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        n, seed: prompts to build and the generator's seed.

    Returns:
        `component, kind, layer, head, dla` for `embed`, every head `l.h`, every `mlpL` and
        `bias`; they sum to the mean logit difference, which `.attrs["logit_diff"]` holds.

    Example:
        >>> dla = hs.direct_logit_attribution(model, "ioi", n=50)
        >>> dla.dla.sum(), dla.attrs["logit_diff"]
    """
    data = dataset(model, task, n, seed)
    taken = capture(model, data, Needs(z_end=True, mlp_end=True, embed_end=True, scale_end=True))
    table = _attribution.direct_logit_attribution(model.weights, data, taken)
    logit_diff = _evaluate.evaluate(data, taken)["logit_diff"]
    return _attach(table, model, data, logit_diff=logit_diff)


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
    row = _evaluate.evaluate(data, capture(model, data, _evaluate.EVALUATE_NEEDS))
    frame = pd.DataFrame([{"task": data.task.name, **row, "dropped": data.dropped}])
    return _attach(frame, model, data)


# ---- knockouts and patching ------------------------------------------------------------------------


def _ablation_options(data: Dataset, components, method, positions, seed, batch_size):
    chosen = names(components, "components")
    for component in chosen:
        _choice(component, "components", ("heads", "mlps"))
    where = names(positions, "positions")
    for position in where:
        if position != "all":
            data.role_names(position)  # an unknown role names the task's roles
    _choice(method, "method", _ablation.METHODS)
    if method != "zero" and data.corrupted is None:
        raise HeadscopeError(f"task {data.task.name} has no corrupted twin: use method='zero'")
    return _ablation.AblationOptions(chosen, method, where, seed, _count(batch_size, "batch_size"))


def ablate(
    model: Model,
    task: TaskLike,
    components: Names = ("heads", "mlps"),
    method: Literal["zero", "mean", "resample"] = "mean",
    positions: Names = "all",
    n: int | None = None,
    seed: int = 0,
    batch_size: int = _ablation.resume.DEFAULT_BATCH,
    exact_top: int | None = None,
) -> pd.DataFrame:
    """The task metric with each head and MLP knocked out in turn (docs/methods.md §6).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        components: "heads", "mlps" or both (a string or a list).
        method: "zero", "mean" (per-position mean of the corrupted twin) or "resample" (a
            corrupted prompt of the same length, drawn with `seed`).
        positions: "all", "end" or role names: where the components are knocked out.
        n, seed: prompts to build and the seed of the generator and of resampling.
        batch_size: prompts per forward pass.
        exact_top: None knocks every component out exactly; N first estimates every head to
            first order (one forward and backward pass per batch) and knocks out exactly only the
            N heads it ranks highest and every MLP (the others keep the estimate).

    Returns:
        One row per component: `component, layer, head, method, metric, pct_of_clean, exact`;
        the metric is the mean logit difference at `end`, the clean one is `.attrs["clean"]`;
        `exact` is False where the value is the first-order estimate.

    Example:
        >>> hs.ablate(model, "seq-digits", n=16).sort_values("pct_of_clean").head(3)
    """
    data = dataset(model, task, n, seed)
    options = _ablation_options(data, components, method, positions, seed, batch_size)
    if exact_top is not None:
        options = dataclasses.replace(options, exact_top=_count(exact_top, "exact_top", least=0))
    return _attach(_ablation.ablate(model, data, options), model, data)


def keep_circuit(
    model: Model,
    task: TaskLike,
    keep: Names,
    components: Names = ("heads", "mlps"),
    method: Literal["zero", "mean", "resample"] = "mean",
    positions: Names = "all",
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The metric with every component but `keep` knocked out (a circuit's faithfulness).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        keep: the circuit, "1.1,2.1,mlp0" or a list of such names (heads LAYER.HEAD, MLPs mlpL).
        components, method, positions: what is knocked out and how, as in `hs.ablate`.
        n, seed: prompts to build and the seed.

    Returns:
        One row: `kept` (comma-joined), `metric`, `clean`, `pct_of_clean`; the component names
        are also in `.attrs["components"]`.

    Example:
        >>> hs.keep_circuit(model, "seq-digits", keep="1.1,2.1,mlp0", n=16)
    """
    data = dataset(model, task, n, seed)
    options = _ablation_options(data, components, method, positions, seed, _ablation.resume.DEFAULT_BATCH)
    result = _ablation.keep_circuit(model, data, list(names(keep, "keep")), options)
    return _attach(_circuit_row(result), model, data, components=result["keep"])


def greedy_circuit(
    model: Model,
    task: TaskLike,
    threshold: float = 1.0,
    components: Names = ("heads", "mlps"),
    method: Literal["zero", "mean", "resample"] = "mean",
    positions: Names = "all",
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A circuit by pruning: drop each component (least important first) costing < `threshold` points.

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        threshold: percent points of the clean metric a removal may cost.
        components, method, positions: what is knocked out and how, as in `hs.ablate`.
        n, seed: prompts to build and the seed.

    Returns:
        One row, as `hs.keep_circuit` gives for the circuit found: `kept, metric, clean,
        pct_of_clean`; `.attrs["components"]` lists the kept components in layer order.

    Example:
        >>> circuit = hs.greedy_circuit(model, "seq-digits", n=16)
        >>> circuit.attrs["components"]
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold < 0:
        raise HeadscopeError(f"threshold={threshold!r}: give percent points, a number >= 0")
    data = dataset(model, task, n, seed)
    options = _ablation_options(data, components, method, positions, seed, _ablation.resume.DEFAULT_BATCH)
    found = _ablation.greedy_circuit(model, data, options, float(threshold))
    result = _ablation.keep_circuit(model, data, found, options)
    return _attach(_circuit_row(result), model, data, components=found, threshold=float(threshold))


def _circuit_row(result: dict) -> pd.DataFrame:
    row = {key: result[key] for key in ("metric", "clean", "pct_of_clean")}
    return pd.DataFrame([{"kept": ",".join(result["keep"]), **row}])


def patch(
    model: Model,
    task: TaskLike,
    direction: Literal["denoise", "noise"] = "denoise",
    by_position: bool = False,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = _ablation.resume.DEFAULT_BATCH,
) -> pd.DataFrame:
    """Activation patching of every head's output between clean and corrupted prompts (docs/methods.md §6).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset` (its task needs a corrupted twin).
        direction: "denoise" (clean head into the corrupted run: 1 = restores everything) or
            "noise" (corrupted head into the clean run: 0 = destroys everything).
        by_position: one value per head and token position.
        n, seed: prompts to build and the seed.
        batch_size: prompts per forward pass.

    Returns:
        `layer, head[, position], direction, patched, value` with value = (patched - corrupted)
        / (clean - corrupted); `.attrs["clean"]` and `.attrs["corrupted"]` hold the two metrics.

    Example:
        >>> grid = hs.patch(model, "seq-digits", n=16)
        >>> hs.plot.heatmap(grid)
    """
    data = dataset(model, task, n, seed)
    _choice(direction, "direction", _patching.DIRECTIONS)
    table = _patching.patch(model, data, direction, bool(by_position), _count(batch_size, "batch_size"))
    return _attach(table, model, data)


def attribution_patch(
    model: Model, task: TaskLike, n: int | None = None, seed: int = 0, batch_size: int = 64
) -> pd.DataFrame:
    """A first-order estimate of `patch(direction="denoise")` for every head and MLP (one backward pass).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset` (its task needs a corrupted twin).
        n, seed: prompts to build and the seed.
        batch_size: prompts per forward and backward pass.

    Returns:
        `component, layer, head, value, approximation` (always True: an approximation);
        `.attrs["clean"]` and `.attrs["corrupted"]` hold the two metrics.

    Example:
        >>> hs.attribution_patch(model, "seq-digits", n=16).head()
    """
    data = dataset(model, task, n, seed)
    table = _patching.attribution_patch(model, data, _count(batch_size, "batch_size"))
    return _attach(table, model, data)


# ---- edges and composition ----------------------------------------------------------------------------


def _edge_options(method, steps, exact_top, donor, batch_size):
    from headscope.scores.circuit import edges as _edges

    _choice(method, "method", _edges.METHODS)
    _choice(donor, "donor", _edges.DONORS)
    top = None if exact_top == "all" else _count(exact_top, "exact_top", least=0)
    return _edges.EdgeOptions(method, _count(steps, "steps"), top, _count(batch_size, "batch_size"), donor)


def edge_attribution(
    model: Model,
    task: TaskLike,
    method: Literal["eap", "eap-ig", "exact"] = "eap-ig",
    steps: int = 5,
    exact_top: int | Literal["all"] = 50,
    donor: Literal["corrupted", "mean"] = "corrupted",
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    curve: bool = False,
) -> pd.DataFrame:
    """The effect of every edge (source -> one input of a later component) on the task metric.

    An edge's effect is the change of the mean logit difference at `end` when the source's
    contribution to that one input is replaced by its value on the corrupted twin (path patching;
    definitions in `headscope.scores.circuit.graph` and the README's Circuits section).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset` (its task needs a corrupted twin).
        method: "eap-ig" (integrated gradients on the inputs as MIB runs it, an approximation),
            "eap" (attribution patching, an approximation) or "exact" (each edge patched on its own).
        steps: eap-ig's points on the corrupted -> clean path of the embedding.
        exact_top: also patch exactly this many edges the approximation ranks highest, or "all".
        donor: "corrupted" (each prompt's twin) or "mean" (per-position mean of the twins).
        n, seed: prompts to build and the seed.
        batch_size: prompts per pass.
        curve: also MIB's faithfulness curve, CPR and CMD of the ranking (10 circuits run).

    Returns:
        One row per edge, largest |score| first: `source, target, input, score, exact, method,
        approximation, source_layer, target_layer` (sources `embed`, `l.h`, `mlpL`; targets
        `l.h` for q, `l.g` for the k/v group g, `mlpL`, `logits`); `exact` is NaN where not
        computed. `.attrs`: clean, corrupted, spearman (approximation vs exact where both exist),
        spearman_top50 (on the 50 edges largest by |exact|), twin (the corrupted twin's kind), and
        `curve`: MIB's faithfulness curve of the ranking (`mib.Curve.as_dict()`: points with
        fraction, edges, metric, f; m_empty, m_full, cpr, cmd, x_axis) when `curve=True`.

    Example:
        >>> edges = hs.edge_attribution(model, "induction", method="eap", n=20)
        >>> edges.head(10)
    """
    from headscope.scores.circuit import edges as _edges

    data = dataset(model, task, n, seed)
    options = _edge_options(method, steps, exact_top, donor, batch_size)
    table = _edges.edge_scores(model, data, options, progress=False)
    if curve:
        from headscope.scores.circuit.faithfulness import ranking_curve

        table.attrs["curve"] = ranking_curve(model, data, table, donor, batch_size).as_dict()
    return _attach(table, model, data)


# ---- labels ------------------------------------------------------------------------------------------


def label_heads(
    model: Model,
    task: TaskLike,
    thresholds: _labels.LabelThresholds | dict | None = None,
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
        One row per (head, label): `layer, head, label, evidence` (each score with the threshold it
        passed); the score tables are in `.attrs["ov_scores"]`, `["role_attention"]`, `["detectors"]`.

    Example:
        >>> hs.label_heads(model, "ioi", n=50)
    """
    data = dataset(model, task, n, seed)
    limits = _thresholds(thresholds)
    relations = default_relations(data.task)
    with_detectors = data.task.name == "induction"  # as the report: repeated tokens are needed
    needs = Needs(resid0_keywords=True, pattern_roles=True, pattern_full=with_detectors, logits_end=False)
    taken = capture(model, data, needs)
    ov = pd.DataFrame()
    if relations:
        _count(k, "k")
        _choice(embedding, "embedding", EMBEDDING_KINDS)
        options = _ov.OVOptions(relations, k, embedding, negative=True)
        ov = _ov.ov_scores(model, data, options, capture=taken).table
    roles = _attention.role_attention(data, taken)
    detectors = _attention.head_detectors(data, taken) if with_detectors else pd.DataFrame()
    contrast = _labels.contrast_group(data.task)
    labels = _labels.label_heads(ov, roles, detectors, data.task.answer_role, limits, contrast)
    tables = {"ov_scores": ov, "role_attention": roles, "detectors": detectors}
    return _attach(labels, model, data, thresholds=limits.as_dict(), **tables)


def _thresholds(thresholds) -> _labels.LabelThresholds:
    if thresholds is None:
        return _labels.LabelThresholds()
    if isinstance(thresholds, _labels.LabelThresholds):
        return thresholds
    if not isinstance(thresholds, dict):
        raise HeadscopeError(f"thresholds={thresholds!r}: give a LabelThresholds or a dict of thresholds")
    known = set(_labels.LabelThresholds.__dataclass_fields__)
    unknown = sorted(set(thresholds) - known)
    if unknown:
        raise HeadscopeError(f"thresholds: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return _labels.LabelThresholds(**thresholds)


__all__ = [
    "AttachedTable",
    "ablate",
    "attention_patterns",
    "attribution_patch",
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
    "role_attention",
    "scatter",
]


# ---- models in memory: one place turns every analysis's `model` into a Model ------------------


def _taking_models_in_memory(analysis):
    """`analysis` with its `model` argument passed through `as_model` first."""

    @functools.wraps(analysis)
    def taking(model, *args, **kwargs):
        return analysis(as_model(model), *args, **kwargs)

    return taking


def _takes_model(value) -> bool:
    return inspect.isfunction(value) and next(iter(inspect.signature(value).parameters), None) == "model"


for _name in [name for name in __all__ if _takes_model(globals()[name])]:
    globals()[_name] = _taking_models_in_memory(globals()[_name])

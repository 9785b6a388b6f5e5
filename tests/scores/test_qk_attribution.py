"""QK attribution against a plain reference loop, and on the organism's induction heads.

The reference patches each component by hand with TransformerLens hooks in complete forward
passes: a head's output at the position is replaced by setting its `hook_z` there (its write is
what then changes in `hook_resid_mid` of its layer: W_O, biases and any norm on the attention
output are the model's own), an MLP's by its `hook_mlp_out`, the embedding by `hook_resid_pre` of
block 0; the change is added to the head's layer input at that one position in a run that keeps
`hook_q` (or `hook_k`), and a second run with that value in place reads `hook_attn_scores`. The
first-order reference is autograd through the same two complete runs. Families: GPT-2 (learned
positions, LayerNorm), Llama (rotary, RMSNorm, grouped-query), Gemma 2 (a norm on the head outputs).
"""

from __future__ import annotations

import pytest
import torch
from scipy import stats

import headscope as hs
from headscope.errors import HeadscopeError
from headscope.models.loading import load_model
from headscope.scores import qk_attribution as qk
from headscope.scores.circuit import graph
from tests.models import families as fam
from tests.numerics import float_tolerance

LAYER, HEAD = 1, 2  # the tiny families have two layers: the head reads embed, 0.0-0.3, mlp0


@pytest.fixture(scope="module", params=["gpt2", "llama", "gemma2"])
def model(request, tmp_path_factory):
    return fam.headscope_model(fam.save_family(fam.BY_NAME[request.param], tmp_path_factory.mktemp("qk")))


@pytest.fixture(scope="module")
def data(model):
    return hs.dataset(model, "ioi", n=5, seed=2)


# ---- the reference -----------------------------------------------------------------------------


def _rows(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    return x[torch.arange(x.shape[0]), where]


def _writes(model, tokens, source, cache, where, baseline: str) -> torch.Tensor:
    """baseline - clean write of `source` into the residual stream at each prompt's `where`."""
    bridge = model.bridge
    if source.kind == "embed":
        clean = _rows(cache["blocks.0.hook_resid_pre"], where)
    elif source.kind == "mlp":
        clean = _rows(cache[f"blocks.{source.layer}.hook_mlp_out"], where)
    else:  # the head's z at `where` set to its baseline; its write is what changes in resid_mid
        z = _rows(cache[f"blocks.{source.layer}.attn.hook_z"][:, :, source.index], where)
        value = z.mean(0, keepdim=True).expand_as(z) if baseline == "mean" else torch.zeros_like(z)

        def set_z(act, hook):
            out = act.clone()
            out[torch.arange(len(where)), where, source.index] = value.to(act)
            return out

        kept = {}
        mid = f"blocks.{source.layer}.hook_resid_mid"
        with torch.no_grad():
            bridge.run_with_hooks(
                tokens,
                fwd_hooks=[
                    (f"blocks.{source.layer}.attn.hook_z", set_z),
                    (mid, lambda a, hook: kept.setdefault("mid", a)),
                ],
                stop_at_layer=source.layer + 1,
            )
        return _rows(kept["mid"] - cache[mid], where)
    base = clean.mean(0, keepdim=True).expand_as(clean) if baseline == "mean" else torch.zeros_like(clean)
    return base - clean


def _patched_score(model, tokens, cache, side: str, where, offset, query, key) -> torch.Tensor:
    """The head's score with `offset` added to its layer input at `where`, seen by q (or k) only."""
    bridge, kind = model.bridge, "q" if side == "query" else "k"
    name = f"blocks.{LAYER}.attn.hook_{kind}"
    resid = cache[f"blocks.{LAYER}.hook_resid_pre"].clone()
    resid = resid + torch.nn.functional.one_hot(where, resid.shape[1]).to(resid)[:, :, None] * offset[:, None]
    kept = {}
    bridge.run_with_hooks(
        tokens,
        fwd_hooks=[
            (f"blocks.{LAYER}.hook_resid_pre", lambda a, hook: resid),
            (name, lambda a, hook: kept.setdefault(kind, a)),
        ],
        stop_at_layer=LAYER + 1,
    )
    bridge.run_with_hooks(
        tokens,
        fwd_hooks=[
            (name, lambda a, hook: kept[kind]),
            (f"blocks.{LAYER}.attn.hook_attn_scores", lambda a, hook: kept.setdefault("s", a)),
        ],
        stop_at_layer=LAYER + 1,
    )
    return kept["s"][torch.arange(len(where)), HEAD, query, key]


def reference(model, data, query_role: str, key_role: str, baseline: str) -> dict:
    """{(side, component): (exact, first_order)} means over prompts, one component at a time."""
    tokens = data.tokens
    query, key = data.roles[query_role].index, data.roles[key_role].index
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(tokens)
    clean = cache[f"blocks.{LAYER}.attn.hook_attn_scores"][torch.arange(data.n), HEAD, query, key]
    found = {}
    for side, where in (("query", query), ("key", key)):
        sources = [s for s in graph.sources(model.arch, model.n_layers) if s.layer < LAYER]
        for source in sources:
            delta = _writes(model, tokens, source, cache, where, baseline)
            with torch.no_grad():
                exact = clean - _patched_score(model, tokens, cache, side, where, delta, query, key)
            eps = torch.zeros_like(delta, requires_grad=True)
            with torch.enable_grad():
                score = _patched_score(model, tokens, cache, side, where, eps, query, key).sum()
                (grad,) = torch.autograd.grad(score, [eps])
            first = -(grad * delta).sum(-1)
            found[side, source.name] = (float(exact.mean()), float(first.mean()))
    return found


@pytest.mark.parametrize("baseline", ["mean", "zero"])
def test_exact_and_first_order_equal_the_reference_loop(model, data, baseline):
    options = qk.QKOptions(LAYER, HEAD, key="IO", query="end", baseline=baseline, batch_size=3)
    table = qk.qk_attribution(model, data, options)  # two batches: the mean spans both
    want = reference(model, data, "end", "IO", baseline)
    assert len(table) == len(want) == 2 * (1 + model.n_heads + 1)
    scale = max(abs(v) for pair in want.values() for v in pair) + abs(table.attrs["score"])
    tol = float_tolerance(fam.HIDDEN * fam.LAYERS * 16, scale)
    for row in table.itertuples():
        exact, first = want[row.side, row.component]
        assert abs(row.exact - exact) <= tol, (row.side, row.component, row.exact, exact)
        assert abs(row.first_order - first) <= tol, (row.side, row.component, row.first_order, first)
        assert row.n == data.n and row.ci_low <= row.exact <= row.ci_high


def test_the_interval_is_scipys_t_interval_over_prompts(model, data):
    sources, found = qk.per_prompt(model, data, qk.QKOptions(LAYER, HEAD, key="S1"))
    values = found.exact["key"][sources.index(graph.Source(0, "head", 1))].numpy()
    want = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    table = qk.table(sources, found)
    row = table[(table["side"] == "key") & (table["component"] == "0.1")].iloc[0]
    assert (row.ci_low, row.ci_high) == pytest.approx(want, rel=1e-9)


def test_a_component_the_head_cannot_read_has_no_row(model):
    names = [s.name for s in qk.upstream(model, LAYER)]
    assert names == ["embed", *[f"0.{h}" for h in range(model.n_heads)], "mlp0"]
    assert [s.name for s in qk.upstream(model, 0)] == ["embed"]


# ---- refusals -----------------------------------------------------------------------------------


def test_undefined_scores_are_refused_in_one_line(model, data):
    with pytest.raises(HeadscopeError, match=r"key='nope': task ioi has no such role; roles: .*IO"):
        qk.qk_attribution(model, data, qk.QKOptions(LAYER, HEAD, key="nope"))
    with pytest.raises(HeadscopeError, match="comes after query='IO'.*cannot attend there"):
        qk.qk_attribution(model, data, qk.QKOptions(LAYER, HEAD, key="end", query="IO"))
    with pytest.raises(HeadscopeError, match="baseline='resample'"):
        hs.qk_attribution(model, data, head="1.2", key="IO", baseline="resample")
    with pytest.raises(HeadscopeError, match="head 5.0 does not exist"):
        hs.qk_attribution(model, data, head="5.0", key="IO")


def test_a_bridge_that_hooks_the_pattern_as_scores_is_refused(tmp_path):
    opt = fam.headscope_model(fam.save_family(fam.BY_NAME["opt"], tmp_path / "opt"))  # its scores hook
    data = hs.dataset(opt, "ioi", n=2, seed=2)  # holds the pattern: the score is not exposed
    with pytest.raises(HeadscopeError, match=r"bridge \(opt\) does not expose head 1.0's pre-softmax scores"):
        hs.qk_attribution(opt, data, head="1.0", key="IO")


def test_a_key_the_mask_hides_is_refused():
    masked = torch.tensor([1.5, torch.finfo(torch.float32).min, float("-inf")])
    with pytest.raises(HeadscopeError, match="cannot attend from 'end' to 't1' in 2 of 3 prompts"):
        qk.check_attends(masked, qk.QKOptions(1, 0, key="t1"))
    qk.check_attends(torch.tensor([1.5, -40.0]), qk.QKOptions(1, 0, key="t1"))  # finite scores pass


# ---- the organism: why its induction heads attend to the token after the first occurrence ----------


@pytest.fixture(scope="module")
def organism():
    return load_model("organism")


def test_organism_induction_heads_read_the_previous_token_heads_on_the_key_side(organism):
    detectors = hs.head_detectors(organism, "induction", n=20)
    induction = detectors[detectors["induction"] > 0.5]
    previous = detectors[detectors["previous_token"] > 0.5]
    previous_names = {f"{r.layer}.{r.head}" for r in previous.itertuples()}
    assert len(induction) == 2 and previous_names == {"1.0", "1.1"}
    data = hs.dataset(organism, "induction", n=12)
    for row in induction.itertuples():
        table = hs.qk_attribution(organism, data, head=f"{row.layer}.{row.head}", query="end", key="t8")
        keys = table[table["side"] == "key"].sort_values("exact", ascending=False)
        assert set(keys["component"].iloc[:2]) == previous_names, keys
        assert (keys["ci_low"].iloc[:2] > 0).all()  # each share is positive beyond its interval
        # over every component of both sides; and without the rows that are exactly zero in both
        # columns (layer 0's heads and mlp1 write nothing), whose ties would help the agreement
        assert table.attrs["spearman"] >= 0.8
        live = table[(table["exact"] != 0) | (table["first_order"] != 0)]
        assert len(live) == 8 and stats.spearmanr(live["first_order"], live["exact"]).statistic >= 0.8

"""The atlas's ranks equal a plain per-head computation from Hugging Face's modules, on two families.

Per head and sign: the `token` embedding of each source by HF's own forward, the head's value and
output (`head_output`, attention weight 1 on the source), the final norm and unembedding on that
output alone (`readout`, for sign -1 on the negated output); then the target's rank among the whole
vocabulary and its rank among the relation's candidate targets, counted from the full logits.
Ranks may differ only where another logit lies within float rounding of the target's.
"""

from __future__ import annotations

import pytest
import torch

import headscope as hs
from headscope.scores.atlas import scored
from headscope.tasks.relation_library import choose_relations
from headscope.tasks.relation_tokens import spell_relation
from tests.models.families import (
    BY_NAME,
    head_output,
    head_values,
    headscope_model,
    hf_model,
    readout,
    save_family,
)
from tests.models.families import token_vectors as hf_token_vectors

TOLERANCE = 1e-4  # relative: float32 sums of the two computations


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory):
    """name -> the folder of that family's tiny model (tests/models/families.py), built once."""
    built = {}

    def folder(name: str):
        if name not in built:
            built[name] = save_family(BY_NAME[name], tmp_path_factory.mktemp(name))
        return built[name]

    return folder


def _near(values: torch.Tensor, best: torch.Tensor) -> int:
    """How many other values lie within rounding of `best` (a rank may move by that many)."""
    tol = TOLERANCE * max(float(values.abs().max()), 1.0)
    return int(((values - best).abs() <= tol).sum()) - 1


def reference_ranks(logits: torch.Tensor, spelled) -> list[tuple[int, int, int, int]]:
    """Per kept pair: top-k rank, its slack, within-set rank, its slack."""
    found = []
    for row, targets, answer in zip(logits, spelled.target_tokens, spelled.answer, strict=True):
        best = row[list(targets)].max()
        words = torch.stack([row[list(c)].max() for c in spelled.candidates])
        within = int((words >= words[answer]).sum()) - 1
        found.append((int((row >= best).sum()) - 1, _near(row, best), within, _near(words, words[answer])))
    return found


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_atlas_ranks_equal_a_per_head_loop(family_dir, name):
    family, folder = BY_NAME[name], family_dir(name)
    model, hf = headscope_model(folder), hf_model(str(folder))
    table = hs.atlas(model, relations="algorithmic", per_source=True)
    per_source = table.attrs["per_source"].set_index(["layer", "head", "sign", "relation", "source"])
    spelled = [
        s for s in (spell_relation(r, model.tokens) for r in choose_relations(("algorithmic",))) if scored(s)
    ]
    assert len(spelled) >= 6  # numbers, number words, months, days, capital letters: both ways
    d_head = model.weights.d_head
    compared = 0
    for relation in spelled:
        x = hf_token_vectors(family, hf, torch.tensor(relation.source_tokens))
        values = head_values(family, hf, x)
        for layer, block in enumerate(family.hf_layers(hf)):
            for head in range(model.n_heads):
                o = head_output(family.hf_out_proj(block), values[layer], head, d_head)
                for sign in (1, -1):
                    ranks = reference_ranks(readout(family, hf, block, sign * o), relation)
                    for source, (top, top_slack, within, within_slack) in zip(
                        relation.sources, ranks, strict=True
                    ):
                        got = per_source.loc[(layer, head, sign, relation.relation.name, source)]
                        assert abs(int(got["rank"]) - top) <= top_slack
                        assert abs(int(got["within_rank"]) - within) <= within_slack
                        compared += 1
    assert compared == 2 * model.n_layers * model.n_heads * sum(s.n for s in spelled)


def test_scores_are_the_shares_of_the_per_source_hits(family_dir):
    model = headscope_model(family_dir("llama"))
    table = hs.atlas(model, relations="month_next,day_prev", k=3, per_source=True)
    per_source = table.attrs["per_source"]
    shares = per_source.groupby(["layer", "head", "relation", "sign"])[["hit", "within_hit"]].mean()
    merged = table.set_index(["layer", "head", "relation", "sign"]).join(shares)
    assert (merged["score"] == merged["hit"]).all() and (merged["within"] == merged["within_hit"]).all()
    assert set(table.relation) == {"month_next", "day_prev"} and set(table.sign) == {1, -1}
    assert (table.chance == 1 / table.n).all()  # months and days: every target its own candidate

"""Composition scores against a per-pair loop that forms the d_model x d_model matrices."""

from __future__ import annotations

import pytest
import torch

from headscope.models.loading import load_model
from headscope.scores.composition import composition_scores
from tests.models.families import save_family
from tests.scores.test_edges import FAMILIES


@pytest.fixture(scope="module", params=list(FAMILIES))
def model(request, tmp_path_factory):
    return load_model(str(save_family(FAMILIES[request.param], tmp_path_factory.mktemp(request.param))))


def _matrices(model, layer: int, head: int) -> dict[str, torch.Tensor]:
    """One head's maps, written out: gains on every reading matrix, O centred under LayerNorm."""
    bridge, w = model.bridge, model.weights
    group = model.arch.kv_head(head)
    gain = torch.diag(w.ln1_w[layer].double())
    Q = gain @ bridge.W_Q[layer, head].detach().double()
    K = gain @ bridge.W_K[layer, group].detach().double()
    V = gain @ bridge.W_V[layer, group].detach().double()
    W_O = w.W_O[layer, head].double()
    if w.normalization == "LN":
        W_O = W_O - W_O.mean(-1, keepdim=True)
    return {"QK": Q @ K.T, "OV": V @ W_O}


def test_composition_equals_a_per_pair_loop(model):
    table = composition_scores(model).set_index(["source", "target", "kind"])["score"]
    H, L = model.n_heads, model.n_layers
    count = 0
    for la in range(L):
        for a in range(H):
            A = _matrices(model, la, a)["OV"]
            for lb in range(la + 1, L):
                for b in range(H):
                    B = _matrices(model, lb, b)
                    norm = torch.linalg.matrix_norm
                    expected = {
                        "q": norm(A @ B["QK"]) / (norm(A) * norm(B["QK"])),
                        "k": norm(B["QK"] @ A.T) / (norm(A) * norm(B["QK"])),
                        "v": norm(A @ B["OV"]) / (norm(A) * norm(B["OV"])),
                    }
                    for kind, value in expected.items():
                        assert table[(f"{la}.{a}", f"{lb}.{b}", kind)] == pytest.approx(
                            float(value), rel=1e-6
                        )
                        count += 1
    assert count == len(table) > 0
    assert table.between(0, 1).all()

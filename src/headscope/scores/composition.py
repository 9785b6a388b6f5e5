"""Q-, K- and V-composition scores between every pair of heads, from the weights alone
(Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits").

For a writer head A (layer a) and a reader head B (layer b > a), with row-vector conventions
(the residual x is a row; head A writes x W_OV^A):
- W_OV^A = V_A O_A, the writer's value-output map;
- W_QK^B = Q_B K_B^T, the reader's query-key map; W_OV^B = V_B O_B;
- Q-composition: |W_OV^A W_QK^B|_F / (|W_OV^A|_F |W_QK^B|_F)       (A's output read as a query)
- K-composition: |W_QK^B (W_OV^A)^T|_F / (|W_OV^A|_F |W_QK^B|_F)   (A's output read as a key)
- V-composition: |W_OV^A W_OV^B|_F / (|W_OV^A|_F |W_OV^B|_F)       (A's output read as a value)

Weights as the norms make them: every matrix that reads the residual (V_A, Q_B, K_B, V_B) is
multiplied row-wise by its norm's effective gain (Gemma's `1 + w`); under LayerNorm the writer's
output O_A is centred (the reader's norm subtracts the mean); the norm's 1/scale is one number
per position and cancels in the ratios. Biases are left out. Grouped-query models: each query
head reads its key/value group's K and V (`models/weights.py`).

All pairs are computed at once per reader layer without forming any d_model x d_model matrix:
with P = O_A R_B (d_head x d_head), |V_A P S_B^T|_F^2 = sum((V_A^T V_A P) * (P S_B^T S_B)).
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from headscope.heads import head_name
from headscope.models.loading import Model
from headscope.models.weights import centred

KINDS: tuple[str, ...] = ("q", "k", "v")


def _per_query_head(x: Tensor, n_heads: int) -> Tensor:
    """[layer, kv_head, ...] -> [layer, head, ...] (each query head takes its group's)."""
    return x.repeat_interleave(n_heads // x.shape[1], dim=1)


def effective_matrices(model: Model) -> dict[str, Float[Tensor, "layer head ..."]]:
    """Q, K, V [layer, head, d_model, d_head] with the ln1 gains; O [layer, head, d_head, d_model]."""
    bridge, weights = model.bridge, model.weights
    gain = weights.ln1_w[:, None, :, None].double()  # [layer, 1, d_model, 1]
    read = lambda w: _per_query_head(w.detach().double().cpu(), model.n_heads) * gain  # noqa: E731
    return {
        "Q": read(bridge.W_Q),
        "K": read(bridge.W_K),
        "V": weights.W_V.double() * gain,
        "O": centred(weights.W_O.double(), weights.normalization),
    }


def _gram(x: Tensor) -> Tensor:
    """x^T x over d_model: [..., d_model, d_head] -> [..., d_head, d_head]."""
    return x.transpose(-1, -2) @ x


def _pair_norms(O_a: Tensor, V_a: Tensor, R_b: Tensor, S_b: Tensor) -> Float[Tensor, "writer reader"]:
    """|V_a O_a R_b S_b^T|_F for every writer a and reader b: sum((G_Va P) * (P G_Sb))."""
    P = torch.einsum("afd,bde->abfe", O_a, R_b)  # [writer, reader, d_head, d_head]
    left = torch.einsum("afg,abge->abfe", _gram(V_a), P)
    right = torch.einsum("abfg,bge->abfe", P, _gram(S_b))
    return (left * right).sum((-1, -2)).clamp(min=0).sqrt()


def _map_norms(A: Tensor, B: Tensor) -> Tensor:
    """|A B^T|_F for A, B [..., d_model, d_head]: sqrt(sum(G_A * G_B))."""
    return (_gram(A) * _gram(B)).sum((-1, -2)).clamp(min=0).sqrt()


def composition_scores(model: Model) -> pd.DataFrame:
    """Q-, K- and V-composition scores of every pair of heads, from the weights (no task).

    Args:
        model: from `hs.load_model`.

    Returns:
        One row per (writer head, later reader head, kind): `source, target, kind, score,
        source_layer, target_layer`, scores in [0, 1] (definitions in the module docstring);
        `.attrs`: model, n_layers, n_heads.

    Example:
        >>> comp = hs.composition_scores(model)
        >>> comp[comp.kind == "k"].sort_values("score", ascending=False).head()
    """
    m = effective_matrices(model)
    H = model.n_heads
    ov = _map_norms(m["V"], m["O"].transpose(-1, -2))  # [layer, head] |V O|_F
    qk = _map_norms(m["Q"], m["K"])
    rows = []
    for reader in range(1, model.n_layers):
        O_a, V_a = m["O"][:reader].flatten(0, 1), m["V"][:reader].flatten(0, 1)  # [writer, ...]
        out_b = m["O"][reader].transpose(-1, -2)  # [head, d_model, d_head]
        parts = {
            "q": (_pair_norms(O_a, V_a, m["Q"][reader], m["K"][reader]), qk[reader]),
            "k": (_pair_norms(O_a, V_a, m["K"][reader], m["Q"][reader]), qk[reader]),
            "v": (_pair_norms(O_a, V_a, m["V"][reader], out_b), ov[reader]),
        }
        writer_norm = ov[:reader].flatten()  # [writer]
        for kind, (pair, reader_norm) in parts.items():
            score = pair / (writer_norm[:, None] * reader_norm[None, :]).clamp(min=1e-30)
            for a in range(score.shape[0]):
                writer = head_name(divmod(a, H))  # writers flattened [layer * head]
                for b in range(H):
                    rows.append((writer, head_name((reader, b)), kind, float(score[a, b]), a // H, reader))
    columns = ["source", "target", "kind", "score", "source_layer", "target_layer"]
    table = pd.DataFrame(rows, columns=columns)
    table.attrs.update(model=model.identity.name, n_layers=model.n_layers, n_heads=model.n_heads)
    table.attrs["definition"] = "Elhage et al. 2021 composition scores, effective norm gains, centred O (LN)"
    return table

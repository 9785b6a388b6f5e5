"""How far bfloat16 (and float16) scores move from float32: the same analyses on one model
loaded in each precision, differences per head.

Run: `python -m benchmarks precision` (CPU; HEADSCOPE_DEVICE=cuda for a GPU). Models: the
organism, and a GPT-2-shaped model with random weights (HEADSCOPE_PRECISION_LAYERS layers,
default 4, of d_model 768, 12 heads, vocabulary 50257; a word-level tokenizer over the task
vocabulary, as benchmarks/ablation.py builds it). Prints one row per (model, dtype):

- OV: the largest change of a head's copy / next / negative-copy score (a share of keyword
  instances in the top k: 0.01 is 1 point), how many (head, relation, sign) scores changed at
  all, the share of (head, keyword) target ranks that moved and the largest move, and the share
  of top-k token lists that stayed the same;
- DLA (ioi): the largest change of a component's attribution, as a share of the mean logit
  difference, and Spearman's rho between the two rankings of the components;
- knockout (seq-digits, mean ablation): the largest change of a component's % of clean, and of
  its metric in logits (a random model's clean logit difference is near 0, so its % is noisy);
- evaluate (ioi): accuracy and logit difference in each precision.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr
from transformers import GPT2Config, GPT2LMHeadModel

from headscope import api
from headscope.models.loading import load_model
from headscope.models.organism.tokenizer import word_level_tokenizer
from headscope.tasks.vocabulary import task_vocabulary

OV_TASK, DLA_TASK, KNOCKOUT_TASK = "seq-digits", "ioi", "seq-digits"


@dataclass(frozen=True)
class Sizes:
    ov_n: int = 100
    dla_n: int = 100
    knockout_n: int = 32


def gpt2_shaped(directory: Path, n_layer: int) -> Path:
    """Random GPT-2 weights of d_model 768 x 12 heads, vocabulary 50257, `n_layer` layers, saved."""
    config = GPT2Config(
        n_layer=n_layer, n_head=12, n_embd=768, vocab_size=50257, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    word_level_tokenizer(task_vocabulary()).save_pretrained(directory)
    return directory


def analyses(spec: str, device: str, dtype: str, sizes: Sizes) -> dict[str, pd.DataFrame]:
    model = load_model(spec, device=device, dtype=dtype)
    ov = api.ov_scores(model, OV_TASK, relations=["copy", "next"], negative=True, n=sizes.ov_n)
    dla = api.direct_logit_attribution(model, DLA_TASK, n=sizes.dla_n)
    knockout = api.ablate(model, KNOCKOUT_TASK, n=sizes.knockout_n)
    evaluation = api.evaluate(model, DLA_TASK, n=sizes.dla_n)
    return {"ov": ov, "dla": dla, "knockout": knockout, "evaluate": evaluation}


def moved(base: dict[str, pd.DataFrame], other: dict[str, pd.DataFrame]) -> dict[str, float]:
    """The differences of `other` from `base` (float32) that the module docstring lists."""
    ov = base["ov"].score.to_numpy() - other["ov"].score.to_numpy()
    ranks = base["ov"].attrs["per_token"]["rank"].to_numpy(float) - other["ov"].attrs["per_token"]["rank"]
    same_topk = (base["ov"].attrs["per_token"]["topk"] == other["ov"].attrs["per_token"]["topk"]).mean()
    dla_scale = abs(base["dla"].attrs["logit_diff"])
    dla = (base["dla"].dla - other["dla"].dla).abs().max() / dla_scale
    rho = spearmanr(base["dla"].dla, other["dla"].dla).statistic
    knockout = (base["knockout"].pct_of_clean - other["knockout"].pct_of_clean).abs().max()
    knockout_logits = (base["knockout"].metric - other["knockout"].metric).abs().max()
    return {
        "ov_max": float(abs(ov).max()),
        "ov_changed": int((abs(ov) > 0).sum()),
        "ov_rows": len(ov),
        "rank_moved": float((abs(ranks) > 0).mean()),
        "rank_max": float(abs(ranks).max()),
        "topk_same": float(same_topk),
        "dla_max_share": float(dla),
        "dla_rho": float(rho),
        "knockout_max_pct": float(knockout),
        "knockout_max_logit": float(knockout_logits),
        "accuracy": float(other["evaluate"].accuracy.iloc[0]),
        "logit_diff": float(other["evaluate"].logit_diff.iloc[0]),
    }


def compare(label: str, spec: str, device: str, sizes: Sizes, dtypes: tuple[str, ...]) -> list[dict]:
    base = analyses(spec, device, "float32", sizes)
    rows = [{"model": label, "dtype": "float32"} | moved(base, base)]
    for dtype in dtypes:
        rows.append({"model": label, "dtype": dtype} | moved(base, analyses(spec, device, dtype, sizes)))
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    return rows


def main() -> None:
    device = os.environ.get("HEADSCOPE_DEVICE", "cpu")
    layers = int(os.environ.get("HEADSCOPE_PRECISION_LAYERS", "4"))
    dtypes = tuple(os.environ.get("HEADSCOPE_PRECISION_DTYPES", "bfloat16,float16").split(","))
    rows = compare("organism", "organism", device, Sizes(), dtypes)
    with tempfile.TemporaryDirectory() as tmp:
        label = f"GPT-2-shaped ({layers} layers, random)"
        rows += compare(label, str(gpt2_shaped(Path(tmp), layers)), device, Sizes(50, 50, 16), dtypes)
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()

"""The bundled organism: headscope's own scores find the heads it was trained to have.

The thresholds are the ones of issue 3 (accuracy >= 95%, a successor head with next >= 80%
whose map lives in that head alone, a name mover with copy >= 90% attending to IO more than
to S, an induction head >= 0.5 fed by a previous-token head). Held-out prompts: evaluation
seed 0, while training drew its prompts from seeds 10_000 upward.
"""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from headscope.capture import Needs, capture
from headscope.models.loading import ORGANISM_DIR, load_model
from headscope.models.organism import train
from headscope.scores.attention import DETECTOR_NEEDS, head_detectors, role_attention
from headscope.scores.evaluate import EVALUATE_NEEDS, evaluate
from headscope.scores.ov import OVOptions, ov_scores
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task

N = 100
SEED = 0
TRAINED_TASKS = ("ioi", "recency", "seq-digits", "seq-numwords", "seq-months", "seq-days")
OTHER_NEXT_MAX = 0.5  # "the map lives in one head": every other head's next score stays below this


@pytest.fixture(scope="module")
def organism():
    return load_model("organism")


def dataset(model, task: str):
    return build_dataset(get_task(task), model.tokens, N, SEED)


def scores(table: pd.DataFrame, relation: str) -> pd.Series:
    """Score per (layer, head) for one relation, sign +1."""
    rows = table[(table.relation == relation) & (table.sign == 1)]
    return rows.set_index(["layer", "head"])["score"]


def test_files_are_a_small_standard_hugging_face_directory():
    config = json.loads((ORGANISM_DIR / "config.json").read_text())
    assert config["model_type"] == "gpt2"
    assert config["bos_token_id"] == 0 and config["eos_token_id"] == 0
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (ORGANISM_DIR / name).is_file()
    assert (ORGANISM_DIR / "model.safetensors").stat().st_size < 20_000_000


@pytest.mark.parametrize("task", TRAINED_TASKS)
def test_accuracy_on_held_out_prompts(organism, task):
    data = dataset(organism, task)
    result = evaluate(data, capture(organism, data, EVALUATE_NEEDS))
    assert data.n == N
    assert result["accuracy"] >= 0.95, result


def digit_next_scores(model) -> pd.Series:
    return scores(ov_scores(model, dataset(model, "seq-digits")).table, "next")


def test_a_successor_head_scores_at_least_80_percent_next_on_digits(organism):
    assert digit_next_scores(organism).max() >= 0.80


def test_the_digit_map_lives_in_the_successor_head_alone(organism):
    next_score = digit_next_scores(organism)
    assert (next_score.drop(next_score.idxmax()) < OTHER_NEXT_MAX).all(), next_score.to_dict()


def test_a_name_mover_copies_names_and_attends_to_the_indirect_object(organism):
    data = dataset(organism, "ioi")
    copy = scores(ov_scores(organism, data, OVOptions(relations=("copy",))).table, "copy")
    attention = role_attention(data, capture(organism, data, Needs(pattern_roles=True, logits_end=False)))
    from_end = attention[attention.query_role == "end"].set_index(["layer", "head", "key_role"])["attention"]
    movers = [
        head for head in copy.index if copy[head] >= 0.90 and from_end[(*head, "IO")] > from_end[(*head, "S")]
    ]
    assert movers, (copy.to_dict(), from_end.to_dict())


def test_an_induction_head_follows_a_previous_token_head(organism):
    data = dataset(organism, "induction")
    detectors = head_detectors(data, capture(organism, data, DETECTOR_NEEDS))
    induction = detectors.loc[detectors.induction.idxmax()]
    assert induction.induction >= 0.5
    earlier = detectors[detectors.layer < induction.layer]
    assert earlier.previous_token.max() >= 0.5, detectors


def test_training_batches_are_deterministic_and_fresh():
    config = train.TrainConfig()
    tokenizer = train.word_level_tokenizer(train.task_vocabulary())
    pool = [tokenizer.convert_tokens_to_ids(w) for w in train.induction_pool()]
    first = train.step_batch(config, tokenizer, pool, 3)
    again = train.step_batch(config, tokenizer, pool, 3)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert config.data_seed >= 10_000  # evaluation uses seeds 0..99
    # exactly one target per task prompt: its answer at the last real position
    n_prompts = len(first[0]) - config.repeats
    assert ((first[1][:n_prompts] != train.IGNORE).sum(1) == 1).all()
    blind_tasks = sum(
        count for name, count in config.mixture + config.scrambled if name in config.mlp_blind_tasks
    )
    assert int(first[2].sum()) <= blind_tasks and not first[2][n_prompts:].any()


def test_scrambled_prompts_are_answered_by_the_member_after_x4():
    tokenizer = train.word_level_tokenizer(train.task_vocabulary())
    months = get_task("seq-months").families[0]
    examples = train.scrambled_examples(tokenizer, "seq-months", 20, 5)
    assert len(examples) == 20  # months wrap: every x4 has a successor
    for ids, targets in examples:
        words = tokenizer.convert_ids_to_tokens(ids)
        assert targets[:-1] == [train.IGNORE] * (len(ids) - 1)
        assert tokenizer.convert_ids_to_tokens(targets[-1]) == months.successor(words[-5])  # x4 . W V in
    assert len({tuple(ids) for ids, _ in examples}) == 20


def test_blind_rows_give_the_mlps_no_gradient_and_the_same_output():
    model = train.build_model(train.TrainConfig(n_layer=1, n_embd=16, n_inner=32, attention_layers=(0,)), 30)
    tokens = torch.randint(1, 30, (3, 5))
    rows = [torch.tensor([True, False, False])]
    free = model(tokens).logits
    handle = model.transformer.h[0].mlp.register_forward_hook(train._stop_gradient_hook(rows))
    logits = model(tokens).logits
    assert torch.equal(logits, free)
    logits[0].sum().backward()  # only the blind row: nothing reaches the MLP
    assert model.transformer.h[0].mlp.c_fc.weight.grad.abs().sum() == 0
    assert model.transformer.h[0].attn.c_attn.weight.grad.abs().sum() > 0
    model(tokens).logits[1].sum().backward()
    assert model.transformer.h[0].mlp.c_fc.weight.grad.abs().sum() > 0
    handle.remove()


def test_repeated_sequences_target_each_repeated_token_after_the_first():
    pool = list(range(1, 50))
    ((ids, targets),) = train.repeat_examples(pool, 1, (5, 5), random.Random(0))
    seq = ids[1:6]
    assert ids == [0, *seq, *seq]
    for position, target in enumerate(targets):
        if target != train.IGNORE:
            assert target == ids[position + 1] and position >= 6


def test_a_short_run_saves_a_loadable_model_with_the_switched_off_parts_zero(tmp_path):
    config = train.TrainConfig(n_layer=2, n_head=2, n_embd=32, n_inner=64, steps=2, threads=1)
    train.train(config, tmp_path)
    assert load_model(str(tmp_path)).n_layers == 2
    tensors = load_file(tmp_path / "model.safetensors")
    total = lambda name: float(tensors[f"transformer.h.{name}"].abs().sum())  # noqa: E731
    assert total("1.mlp.c_fc.weight") == total("1.mlp.c_proj.weight") == 0  # MLP only in layer 0
    assert total("0.attn.c_attn.weight") == total("0.attn.c_proj.weight") == 0  # no heads in layer 0
    assert total("0.mlp.c_fc.weight") > 0 and total("1.attn.c_proj.weight") > 0

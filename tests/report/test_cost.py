"""The memory each phase holds, against hand arithmetic on a small shape."""

from __future__ import annotations

import pytest

from headscope.report import cost
from headscope.scores import ov_kernel

# 4 layers x 2 heads of 8 (2 key/value groups), d_model 16, MLP 64, vocabulary 100
SHAPE = cost.Shape(4, 2, 16, 8, 100, 0, d_mlp=64, n_kv_heads=2)


def test_one_layer_of_activations():
    # 3 prompts x 5 tokens x (residual 16 + MLP 64 + 2 heads x 5 keys), float32
    assert cost.layer_bytes(SHAPE, 3, 5.0) == 4 * 3 * 5 * (16 + 64 + 10)


def test_a_pass_with_gradients_holds_every_layer_of_one_batch():
    one = cost.layer_bytes(SHAPE, 16, 5.0)
    assert cost.forward_memory(SHAPE, 100, 5.0, 16, gradients=False) == one
    assert cost.forward_memory(SHAPE, 100, 5.0, 16, gradients=True) == 4 * one
    assert cost.forward_memory(SHAPE, 3, 5.0, 16, gradients=True) == 4 * cost.layer_bytes(SHAPE, 3, 5.0)
    # the circuit: every layer, one input per query head (2), key group (2), value group (2), the MLP
    assert cost.circuit_memory(SHAPE, 4, 5.0) == 4 * 4 * 5 * 4 * (7 * 16 + 64 + 2 * 5)
    assert cost.circuit_memory(SHAPE, 40, 5.0) == cost.circuit_memory(SHAPE, 16, 5.0)  # one batch


def test_the_capture_keeps_each_prompt_s_rows():
    per_prompt = 100 + 8 * 8 + 4 * 16 + 2 * 8 * 5  # logits, z, MLP out, attention at end and roles
    assert cost.kept_bytes(SHAPE, 10, 5.0, False) == 4 * 10 * per_prompt
    assert cost.kept_bytes(SHAPE, 10, 5.0, True) == 4 * 10 * (per_prompt + 8 * 25)  # + whole patterns


def test_the_ov_pass_holds_blocks_per_thread_not_the_model():
    rows, threads, k = 50, 2, 5
    per_thread = 4 * 4 * 8 * 16 + 4 * 4 * rows * 8 + 4 * (ov_kernel.BLOCK_FLOATS + 16 * ov_kernel.COLUMNS)
    outputs = 4 * 8 * 2 * rows * (2 + k) + 4 * rows * 16
    assert cost.ov_memory(SHAPE, rows, threads, k) == threads * per_thread + outputs
    wide = cost.Shape(80, 64, 8192, 128, 100, 0)  # a head block is capped, whatever the model
    assert cost.ov_memory(wide, 10**5, 1, k) == pytest.approx(
        2 * ov_kernel.HEAD_BLOCK_BYTES
        + 4 * (ov_kernel.BLOCK_FLOATS + 8192 * ov_kernel.COLUMNS)
        + 4 * 80 * 64 * 2 * 10**5 * (2 + k)
        + 4 * 10**5 * 8192
    )

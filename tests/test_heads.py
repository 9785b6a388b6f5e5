"""Component names: 'l.h' and 'mlpL' written and read back, and the errors a bad name gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headscope.errors import HeadscopeError
from headscope.heads import Component, check_head, head_name, parse_head

layers = st.integers(0, 500)
heads = st.none() | st.integers(0, 500)


@given(layer=layers, head=heads)
def test_a_name_reads_back_as_its_component(layer, head):
    component = Component(layer, head)
    assert Component.named(component.name) == component
    assert Component.parse(component.name, layer + 1, (head or 0) + 1) == component
    assert str(component) == component.name


@given(layer=layers, head=st.integers(0, 500))
def test_names_are_the_hand_written_spellings(layer, head):
    assert Component(layer, head).name == f"{layer}.{head}" == head_name((layer, head))
    assert Component(layer).name == f"mlp{layer}"
    assert Component(layer, head).kind == "head" and Component(layer).kind == "mlp"


@given(
    text=st.text(alphabet="0123456789.mlpx ", max_size=8).filter(
        lambda t: Component.named(t) is None and t.strip() != ""
    )
)
def test_other_names_are_no_component_and_parse_says_how_to_write_one(text):
    with pytest.raises(HeadscopeError, match="write heads as LAYER.HEAD"):
        Component.parse(text, 12, 12)


def test_an_mlp_sorts_after_its_layers_heads():
    names = ["mlp1", "1.10", "0.3", "mlp0", "1.2"]
    ordered = sorted(names, key=lambda n: (Component.named(n).order, n))
    assert ordered == ["0.3", "mlp0", "1.10", "1.2", "mlp1"]
    assert Component.named("embed") is None and Component.named("logits") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mlp12", "component mlp12 does not exist: this model has MLPs mlp0-mlp11"),
        ("12.0", "head 12.0 does not exist: this model has layers 0-11 and heads 0-3"),
        ("3.4", "head 3.4 does not exist: this model has layers 0-11 and heads 0-3"),
        ("mlp", "bad component 'mlp': write heads as LAYER.HEAD (9.1) and MLPs as mlpLAYER (mlp9)"),
        ("a.b", "bad head 'a.b': write heads as LAYER.HEAD, e.g. 9.1"),
    ],
)
def test_parse_names_the_bad_value_and_the_range(text, message):
    with pytest.raises(HeadscopeError) as refused:
        Component.parse(f" {text} ", 12, 4)
    assert str(refused.value) == message


def test_parse_head_still_reads_heads_only():
    assert parse_head("9.1", 12, 12) == (9, 1)
    with pytest.raises(HeadscopeError, match="bad head 'mlp9'"):
        parse_head("mlp9", 12, 12)


@pytest.mark.parametrize("head", [(12, 0), (0, 4), (-1, 0), (0, -1)])
def test_check_head_refuses_a_head_outside_the_model(head):
    with pytest.raises(HeadscopeError, match=r"does not exist: this model has layers 0-11 and heads 0-3$"):
        check_head(head, 12, 4)
    assert check_head((11, 3), 12, 4) == (11, 3)

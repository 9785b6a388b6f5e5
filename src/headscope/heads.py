"""Heads and MLPs by name: a head is `l.h` (9.1), a layer's MLP `mlpL` (mlp9), both 0-based;
head lists are `all` or `9.1,8.8`, checked against the model's shape."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from headscope.errors import HeadscopeError

Head = tuple[int, int]
HEAD_PATTERN = re.compile(r"^(\d+)\.(\d+)$")
MLP_PATTERN = re.compile(r"^mlp(\d+)$", re.ASCII)


@dataclass(frozen=True)
class Component:
    """Head `head` of `layer`, or the layer's MLP when `head` is None; `name` is how every table,
    figure and flag writes it ('9.1', 'mlp9') and `Component.named` reads it back."""

    layer: int
    head: int | None = None

    @property
    def name(self) -> str:
        return f"mlp{self.layer}" if self.head is None else f"{self.layer}.{self.head}"

    def __str__(self) -> str:
        return self.name

    @property
    def kind(self) -> str:
        """'head' or 'mlp'."""
        return "mlp" if self.head is None else "head"

    @property
    def order(self) -> float:
        """Where it writes in the forward pass: a layer's MLP after its heads (layer + 0.5)."""
        return self.layer + 0.5 if self.head is None else float(self.layer)

    @classmethod
    def named(cls, text: str) -> Component | None:
        """'9.1' -> head 1 of layer 9, 'mlp9' -> the MLP of layer 9, any other name (embed, bias,
        logits) -> None. Only the spelling is checked; `parse` checks it against a model too."""
        item = text.strip()
        head, mlp = HEAD_PATTERN.match(item), MLP_PATTERN.match(item)
        if head is not None:
            return cls(int(head.group(1)), int(head.group(2)))
        return cls(int(mlp.group(1))) if mlp is not None else None

    @classmethod
    def parse(cls, text: str, n_layers: int, n_heads: int) -> Component:
        """A head or an MLP of a model this shape; an error names the bad value and the range."""
        item = text.strip()
        mlp = MLP_PATTERN.match(item)
        if mlp is not None:
            layer = int(mlp.group(1))
            if layer >= n_layers:
                raise HeadscopeError(
                    f"component {item} does not exist: this model has MLPs mlp0-mlp{n_layers - 1}"
                )
            return cls(layer)
        if "." not in item:
            raise HeadscopeError(
                f"bad component {item!r}: write heads as LAYER.HEAD (9.1) and MLPs as mlpLAYER (mlp9)"
            )
        return cls(*parse_head(item, n_layers, n_heads))


def all_heads(n_layers: int, n_heads: int) -> list[Head]:
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def parse_head(text: str, n_layers: int, n_heads: int) -> Head:
    """'9.1' -> (9, 1), or a HeadscopeError naming the bad value and the model's range."""
    match = HEAD_PATTERN.match(text.strip())
    if match is None:
        raise HeadscopeError(f"bad head {text.strip()!r}: write heads as LAYER.HEAD, e.g. 9.1")
    return check_head((int(match.group(1)), int(match.group(2))), n_layers, n_heads)


def check_head(head: Head, n_layers: int, n_heads: int) -> Head:
    """The head when a model of this shape has it, else a HeadscopeError naming the model's range."""
    layer, index = head
    if not (0 <= layer < n_layers and 0 <= index < n_heads):
        raise HeadscopeError(
            f"head {Component(layer, index).name} does not exist: this model has layers 0-{n_layers - 1} "
            f"and heads 0-{n_heads - 1}"
        )
    return head


def parse_heads(text: str, n_layers: int, n_heads: int) -> list[Head]:
    """'all' or a comma-separated list of LAYER.HEAD, in the order given, without repeats."""
    if text.strip() == "all":
        return all_heads(n_layers, n_heads)
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise HeadscopeError("empty head list: give 'all' or heads like 9.1,8.8")
    heads = [parse_head(item, n_layers, n_heads) for item in items]
    return list(dict.fromkeys(heads))


def head_names(layers: Iterable[int], heads: Iterable[int]) -> list[str]:
    """'l.h' of each layer and head taken pairwise, e.g. a table's `layer` and `head` columns."""
    return [Component(int(layer), int(head)).name for layer, head in zip(layers, heads, strict=True)]


def head_name(head: Head) -> str:
    """(9, 1) -> '9.1'."""
    return Component(int(head[0]), int(head[1])).name

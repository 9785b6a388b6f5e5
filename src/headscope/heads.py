"""Head lists: `all`, or `9.1,8.8` (layer.head, 0-based) checked against the model's shape."""

from __future__ import annotations

import re

from headscope.errors import HeadscopeError

Head = tuple[int, int]
HEAD_PATTERN = re.compile(r"^(\d+)\.(\d+)$")


def all_heads(n_layers: int, n_heads: int) -> list[Head]:
    return [(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def parse_head(text: str, n_layers: int, n_heads: int) -> Head:
    """'9.1' -> (9, 1), or a HeadscopeError naming the bad value and the model's range."""
    match = HEAD_PATTERN.match(text.strip())
    if match is None:
        raise HeadscopeError(f"bad head {text.strip()!r}: write heads as LAYER.HEAD, e.g. 9.1")
    layer, head = int(match.group(1)), int(match.group(2))
    if layer >= n_layers or head >= n_heads:
        raise HeadscopeError(
            f"head {layer}.{head} does not exist: this model has layers 0-{n_layers - 1} "
            f"and heads 0-{n_heads - 1}"
        )
    return layer, head


def parse_heads(text: str, n_layers: int, n_heads: int) -> list[Head]:
    """'all' or a comma-separated list of LAYER.HEAD, in the order given, without repeats."""
    if text.strip() == "all":
        return all_heads(n_layers, n_heads)
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise HeadscopeError("empty head list: give 'all' or heads like 9.1,8.8")
    heads = [parse_head(item, n_layers, n_heads) for item in items]
    return list(dict.fromkeys(heads))


def head_name(head: Head) -> str:
    return f"{head[0]}.{head[1]}"

"""The head atlas: every head on the relation library, both signs, from the weights alone."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd
import torch

from headscope.models.loading import Model
from headscope.models.product_rates import KernelPrecision, kernel_precision
from headscope.models.streamed import StreamedModel
from headscope.scores.atlas import AtlasOptions, AtlasPass, atlas_scores, check_atlas
from headscope.tasks.relation_library import choose_relations

DEFAULT_OPTIONS = AtlasOptions()


def kernel_choice(model: Model | StreamedModel, options: AtlasOptions) -> KernelPrecision:
    """The OV kernel's product precision for this model: `options.kernel_dtype`, and for "auto"
    bfloat16 only where the weights are streamed in bfloat16 and this processor's bfloat16 products
    are faster (measured here: `models.product_rates`)."""
    streamed_bfloat16 = isinstance(model, StreamedModel) and model.dtype == torch.bfloat16
    return kernel_precision(options.kernel_dtype, streamed_bfloat16)


def atlas_tables(
    model: Model,
    relations: Sequence[str] | None = None,
    options: AtlasOptions = DEFAULT_OPTIONS,
    computed: AtlasPass | None = None,
) -> dict[str, pd.DataFrame]:
    """`atlas` (every head x relation x sign), `atlas_cards` (each head's strongest relations),
    `atlas_relations` (the pairs kept for this tokenizer) and, with `options.per_source`,
    `atlas_per_source`; `relations` names relations, groups or TOML files (None: the library);
    `computed`: the atlas's inputs and ranks from a pass shared with other score sets.

    Without `computed`, the kernel's product precision is chosen first (`kernel_choice`) and
    recorded on the `atlas` table: `attrs["kernel"]` (`KernelPrecision.record`: the precision,
    what was asked for, the rates measured, one line saying why)."""
    check_atlas(model, options)
    chosen = choose_relations(relations) if relations is not None else None
    choice = None if computed is not None else kernel_choice(model, options)
    if choice is not None:
        options = dataclasses.replace(options, kernel_dtype=choice.dtype)
    result = atlas_scores(model, chosen, options, computed)
    if choice is not None:
        result.table.attrs["kernel"] = choice.record()
    tables = {"atlas": result.table, "atlas_cards": result.cards, "atlas_relations": result.relations}
    return tables | ({"atlas_per_source": result.per_source} if options.per_source else {})

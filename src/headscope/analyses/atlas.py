"""The head atlas: every head on the relation library, both signs, from the weights alone."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from headscope.models.loading import Model
from headscope.scores.atlas import AtlasOptions, AtlasPass, atlas_scores
from headscope.tasks.relation_library import choose_relations

DEFAULT_OPTIONS = AtlasOptions()


def atlas_tables(
    model: Model,
    relations: Sequence[str] | None = None,
    options: AtlasOptions = DEFAULT_OPTIONS,
    computed: AtlasPass | None = None,
) -> dict[str, pd.DataFrame]:
    """`atlas` (every head x relation x sign), `atlas_cards` (each head's strongest relations),
    `atlas_relations` (the pairs kept for this tokenizer) and, with `options.per_source`,
    `atlas_per_source`; `relations` names relations, groups or TOML files (None: the library);
    `computed`: the atlas's inputs and ranks from a pass shared with other score sets."""
    chosen = choose_relations(relations) if relations is not None else None
    result = atlas_scores(model, chosen, options, computed)
    tables = {"atlas": result.table, "atlas_cards": result.cards, "atlas_relations": result.relations}
    return tables | ({"atlas_per_source": result.per_source} if options.per_source else {})

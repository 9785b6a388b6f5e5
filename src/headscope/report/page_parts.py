"""The parts a report page is made of, as data the template fills in: tables as strings, head
pickers, the circuit section, a task's section and the page; and the small helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from headscope.report.curve_plot import CurvePlot
from headscope.report.figures import Figure, Heatmap
from headscope.run import Run

PER_TOKEN_ROWS = 40


@dataclass(frozen=True)
class TableView:
    """A table as strings, ready for the template (which escapes every cell)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""

    @classmethod
    def of(cls, title: str, table: pd.DataFrame, note: str = "", limit: int = 500) -> TableView:
        rows = [[cell(value) for value in row] for row in table.head(limit).itertuples(index=False)]
        more = f" (first {limit} of {len(table)} rows; all in the CSV)" if len(table) > limit else ""
        return cls(title, [str(c) for c in table.columns], rows, note + more)


@dataclass(frozen=True)
class Choice:
    """One head of a section's head selector: `lead` when the section chose it (labelled or top)."""

    head: str  # "l.h"
    text: str  # the option's text: the head and why the section shows it
    lead: bool


@dataclass(frozen=True)
class PickBlock:
    """A section that shows one head at a time: the reader picks it, the section's heads first."""

    name: str
    title: str
    note: str
    choices: list[Choice]
    tables: dict[str, list[TableView]]  # by head
    figures: dict[str, Figure] = field(default_factory=dict)  # by head


@dataclass(frozen=True)
class CircuitSection:
    """The task's circuit: the diagram's data, the edge table and the circuit's faithfulness."""

    diagram: dict
    faithfulness: TableView
    edges: TableView
    curve: CurvePlot | None = None  # MIB's faithfulness curve of the ranking, CPR and CMD


@dataclass(frozen=True)
class AtlasSection:
    """The head atlas, from the weights alone: heads x relations heatmaps, function cards, relations."""

    heatmaps: list[Heatmap]
    cards: TableView
    relations: TableView
    note: str


@dataclass(frozen=True)
class TaskSection:
    name: str
    description: str
    evaluation: TableView
    heatmaps: list[Heatmap]
    labels: TableView
    keywords: list[PickBlock]
    scatter: PickBlock | None
    categories: TableView | None
    prompts: TableView | None
    viewer: dict | None
    not_computed: list[str] = field(default_factory=list)  # "DLA: why" per analysis left out
    circuit: CircuitSection | None = None
    ranked_by: str = "|direct logit attribution|"  # what the scatter's and viewer's other heads follow
    knockout_note: str = ""  # where a budgeted run's knockouts stopped (in looks), one sentence


@dataclass(frozen=True)
class Page:
    title: str
    facts: TableView
    evaluation: TableView
    labels: TableView
    thresholds: TableView
    comparison: TableView
    head_card: TableView | None
    qk: TableView | None  # the labelled heads' QK attribution, below the head card
    left_out: TableView | None
    circuits: TableView | None
    overview_figures: list[Heatmap]
    tasks: list[TaskSection]
    versions: TableView
    created: str
    figures: list[Figure] = field(default_factory=list)
    not_computed: list[str] = field(default_factory=list)  # over every task, each reason once
    atlas: AtlasSection | None = None  # the head atlas, weights only (report/atlas_section.py)


def cell(value) -> str:
    """A table cell as the page writes it: floats to 3 places (3 significant digits when tiny), NaN blank."""
    if isinstance(value, float):
        return (
            "" if value != value else f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
        )
    return str(value)


def slug(text: str) -> str:
    """A name for ids and file names: letters and digits kept, the rest '-', lower case."""
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def model_shape(run: Run) -> tuple[int, int]:
    """(n_layers, n_heads) of the run's model."""
    return int(run.model["n_layers"]), int(run.model["n_heads"])

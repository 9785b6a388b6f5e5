"""Text for the static PNGs: the installed fonts that cover the most scripts, and a quiet fallback.

matplotlib draws a missing glyph as a box and warns once per glyph (about 120 warnings for a
task name in another script). The PNGs ask for a list of fonts (matplotlib falls back along
it glyph by glyph); a character none of them has becomes '?' without a warning. The page
itself shows every name as the browser's fonts draw it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import matplotlib
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font

from headscope.files import write_atomic

PREFERRED = (
    "DejaVu Sans",
    "Noto Sans",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans Arabic",
    "Noto Sans Devanagari",
    "WenQuanYi Zen Hei",
    "Arial Unicode MS",
)
MISSING = "?"


@cache
def font_files() -> dict[str, str]:
    """Installed fonts of PREFERRED, in its order: family name -> file."""
    found = {entry.name: entry.fname for entry in font_manager.fontManager.ttflist}
    return {name: found[name] for name in PREFERRED if name in found}


@cache
def _covered() -> frozenset[int]:
    codes: set[int] = set()
    for path in font_files().values():
        codes |= set(FT2Font(path).get_charmap())
    return frozenset(codes)


def use_fonts() -> None:
    """Make matplotlib try each installed font of PREFERRED in turn for every glyph."""
    if font_files():
        matplotlib.rcParams["font.family"] = list(font_files())


def drawable(text: str) -> str:
    """`text` with each character that no listed font can draw replaced by '?' (spaces kept)."""
    covered = _covered()
    if not covered:
        return text
    return "".join(c if c.isspace() or ord(c) in covered else MISSING for c in text)


def png_figure(figsize: tuple[float, float], **subplots):
    """A matplotlib figure on its own Agg canvas and its axes (`Figure.subplots(**subplots)`).

    The one place the static PNGs choose a backend: the figure never enters pyplot, so pyplot's
    backend (a notebook's inline figures, say) is neither read nor changed, and nothing needs closing.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(**subplots)


def save_png(fig, path: Path) -> Path:
    """A figure of `png_figure` written atomically as the report's PNG (110 dpi)."""
    return write_atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))

"""The atlas's OV kernel precision chosen for the machine (`analyses.atlas.atlas_tables`).

bfloat16 products only for weights streamed in bfloat16, and only where this processor's bfloat16
products win (`models.product_rates`, whose measurement is replaced here by given rates); float32
otherwise, which is today's atlas bit for bit; the choice recorded on the table.
"""

from __future__ import annotations

import pandas as pd
import pytest

from headscope.analyses.atlas import atlas_tables
from headscope.errors import HeadscopeError
from headscope.models import product_rates
from headscope.models.product_rates import ProductRates
from headscope.models.streamed import stream_model
from headscope.scores.atlas import AtlasOptions, atlas_scores
from tests.models.families import headscope_model

RELATIONS = ("algorithmic",)
SLOW = ProductRates(90e9, 1e9)  # bfloat16 without its instructions (our EPYC: about 1/90)
FAST = ProductRates(90e9, 300e9)  # with them


@pytest.fixture(scope="module")
def streamed_bfloat16():
    return stream_model("organism", "bfloat16")


def _measured(monkeypatch, rates: ProductRates | None) -> list[int]:
    """The rates the measurement gives (None: it must not run); returns the calls made."""
    calls: list[int] = []

    def measure() -> ProductRates:
        assert rates is not None, "measured where nothing is to be chosen"
        calls.append(1)
        return rates

    monkeypatch.setattr(product_rates, "measure_rates", measure)
    return calls


def _today(model) -> pd.DataFrame:
    """The atlas as computed before the choice: the kernel in float32 throughout."""
    from headscope.tasks.relation_library import choose_relations

    return atlas_scores(model, choose_relations(RELATIONS), AtlasOptions()).table


@pytest.mark.parametrize(("asked", "rates"), [("float32", None), ("auto", SLOW)])
def test_float32_is_todays_atlas(streamed_bfloat16, monkeypatch, asked, rates):
    calls = _measured(monkeypatch, rates)
    table = atlas_tables(streamed_bfloat16, RELATIONS, AtlasOptions(kernel_dtype=asked))["atlas"]
    pd.testing.assert_frame_equal(table, _today(streamed_bfloat16))
    kernel = table.attrs["kernel"]
    assert (kernel["dtype"], kernel["asked"], len(calls)) == ("float32", asked, 0 if rates is None else 1)
    if rates is not None:
        assert (kernel["float32_flops"], kernel["bfloat16_flops"]) == (90e9, 1e9)
        assert kernel["line"].startswith("OV kernel products in float32: bfloat16 products 0.011x float32's")


def test_auto_takes_bfloat16_where_it_wins(streamed_bfloat16, monkeypatch):
    _measured(monkeypatch, FAST)
    auto = atlas_tables(streamed_bfloat16, RELATIONS, AtlasOptions())["atlas"]
    _measured(monkeypatch, None)
    forced = atlas_tables(streamed_bfloat16, RELATIONS, AtlasOptions(kernel_dtype="bfloat16"))["atlas"]
    assert auto.attrs["kernel"]["dtype"] == "bfloat16" and "3.3x float32's" in auto.attrs["kernel"]["line"]
    assert forced.attrs["kernel"]["line"] == "OV kernel products in bfloat16 (asked for)"
    pd.testing.assert_frame_equal(auto, forced)
    today = _today(streamed_bfloat16)  # against float32 products: the within-set ranks are float32's
    pd.testing.assert_series_equal(forced["within"], today["within"])
    moved = (forced["score"] != today["score"]).mean()  # a hit moved at a bfloat16 tie: none measured here
    assert moved <= 0.01, f"{moved:.1%} of the top-k scores differ"


def test_a_loaded_or_float32_model_is_not_measured(family_dir, monkeypatch):
    _measured(monkeypatch, None)
    folder = family_dir("gpt2")
    for model in (headscope_model(folder), stream_model(str(folder), "float32")):
        table = atlas_tables(model, RELATIONS)["atlas"]
        assert table.attrs["kernel"]["dtype"] == "float32"
        assert table.attrs["kernel"]["float32_flops"] is None


def test_an_unknown_kernel_precision_is_refused_before_measuring(streamed_bfloat16, monkeypatch):
    _measured(monkeypatch, None)
    with pytest.raises(HeadscopeError, match="kernel_dtype='half': choose auto, float32 or bfloat16"):
        atlas_tables(streamed_bfloat16, RELATIONS, AtlasOptions(kernel_dtype="half"))

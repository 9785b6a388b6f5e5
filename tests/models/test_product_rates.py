"""The product rates measured at the start, and the OV kernel's product precision chosen from them."""

from __future__ import annotations

import math

import pytest
import torch

from headscope.errors import HeadscopeError
from headscope.models import product_rates as pr
from headscope.models.product_rates import (
    BFLOAT16_MARGIN,
    KernelPrecision,
    ProductRates,
    faster_precision,
    kernel_precision,
    measure_rates,
    product_rate,
)


@pytest.mark.parametrize(
    ("float32", "bfloat16", "chosen"),
    [
        (100e9, 1e9, "float32"),  # AVX2 only: bfloat16 emulated, about 90x slower (our EPYC)
        (100e9, 100e9, "float32"),  # as fast: not worth the conversions and the ties
        (100e9, 119e9, "float32"),  # just under the margin
        (100e9, 120e9, "bfloat16"),  # at the margin
        (100e9, 400e9, "bfloat16"),  # bfloat16 instructions (AVX-512 BF16, AMX)
    ],
)
def test_bfloat16_only_where_it_wins_by_the_margin(float32, bfloat16, chosen):
    assert BFLOAT16_MARGIN == 1.2
    assert faster_precision(ProductRates(float32, bfloat16)) == chosen


def test_the_margin_is_a_parameter():
    rates = ProductRates(100e9, 110e9)
    assert (faster_precision(rates, 1.05), faster_precision(rates, 1.2)) == ("bfloat16", "float32")


def _never() -> ProductRates:
    raise AssertionError("measured where nothing is to be chosen")


@pytest.mark.parametrize("asked", ["float32", "bfloat16"])
@pytest.mark.parametrize("streamed_bfloat16", [False, True])
def test_a_precision_asked_for_is_taken_unmeasured(asked, streamed_bfloat16):
    choice = kernel_precision(asked, streamed_bfloat16, _never)
    assert choice == KernelPrecision(asked, asked, None)
    assert choice.line() == f"OV kernel products in {asked} (asked for)"


def test_auto_is_float32_unmeasured_unless_the_weights_are_streamed_in_bfloat16():
    choice = kernel_precision("auto", False, _never)
    assert choice.dtype == "float32" and choice.rates is None
    assert "only for weights streamed in bfloat16" in choice.line()


@pytest.mark.parametrize(("bfloat16", "chosen"), [(0.5e9, "float32"), (200e9, "bfloat16")])
def test_auto_on_streamed_bfloat16_weights_follows_the_measured_rates(bfloat16, chosen):
    rates = ProductRates(80e9, bfloat16)
    choice = kernel_precision("auto", True, lambda: rates)
    assert (choice.dtype, choice.asked, choice.rates) == (chosen, "auto", rates)
    record = choice.record()
    assert (record["dtype"], record["float32_flops"], record["bfloat16_flops"]) == (chosen, 80e9, bfloat16)
    ratio = f"{bfloat16 / 80e9:.2g}x"
    assert record["line"].startswith(f"OV kernel products in {chosen}: bfloat16 products {ratio} float32's")


def test_an_unknown_precision_is_one_line():
    with pytest.raises(HeadscopeError, match="kernel_dtype='half': choose auto, float32 or bfloat16"):
        kernel_precision("half", True, _never)


def test_the_measured_rates_are_positive_and_finite_and_the_threads_restored():
    threads = torch.get_num_threads()
    rates = measure_rates(seconds=0.05, shape=(64, 128, 256))
    assert torch.get_num_threads() == threads
    for rate in (rates.float32, rates.bfloat16):
        assert rate > 0 and math.isfinite(rate)
    assert rates.ratio == rates.bfloat16 / rates.float32


def test_one_product_is_made_however_short_the_time(monkeypatch):
    """A processor whose one product outlasts the time (bfloat16 without its instructions) still
    gets a rate: the first product counts."""
    made = []
    monkeypatch.setattr(pr.torch, "mm", lambda a, b: made.append((a.dtype, a.shape, b.shape)))
    rate = product_rate(torch.bfloat16, seconds=0.0, shape=(8, 16, 32))
    assert made == [(torch.bfloat16, (8, 16), (16, 32))] and rate > 0

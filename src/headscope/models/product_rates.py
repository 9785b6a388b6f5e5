"""This processor's matrix-product rates, and the OV kernel's product precision chosen from them.

Processors differ in what a bfloat16 product costs: one with AVX-512 BF16 (or AMX) instructions
multiplies bfloat16 several times faster than float32, one with only AVX2 (our 2-core AMD EPYC)
converts each operand and multiplies bfloat16 about 90 times slower (measured: docs/atlas.md,
"Streamed weights"). So the kernel's precision is measured, not assumed: `measure_rates` times
torch's float32 and bfloat16 products at the start (about 0.2 s each, on one thread, as each of
the kernel's workers runs), `faster_precision` reads them, and `kernel_precision` applies the
rule to a streamed atlas whose weights are bfloat16 (`headscope atlas --stream --dtype bfloat16`):
bfloat16 products only where they beat float32's by `BFLOAT16_MARGIN`, else float32 as before.

`product_rate` is the one timing of a product: the report's cost model reads its float32 rate at
the current thread count (`report.cost`), this module the kernel-sized products' on one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from headscope.errors import HeadscopeError
from headscope.models.devices import torch_threads

Precision = Literal["float32", "bfloat16"]
KernelDType = Literal["auto", "float32", "bfloat16"]
KERNEL_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16")

PRODUCT_SHAPE = (512, 768, 2048)  # [512, 768] @ [768, 2048]: the report's cost model's product
# A product the size of the kernel's own (a head's d_head x d_model circuit times a block of 1,024
# vocabulary columns, for up to 128 query heads' rows): small enough that a processor without bfloat16
# instructions (1 GFLOP/s on ours) makes one in 0.2 s.
KERNEL_SHAPE = (128, 768, 1024)
MEASURE_SECONDS = 0.2
# bfloat16 products are chosen only from 1.2 x float32's rate: a product timed for 0.2 s on a busy
# machine varies by up to 10% from one measurement to the next (docs/atlas.md), and bfloat16 costs
# the kernel work besides the products (each block of unembedding columns and each logits block
# converted, at memory speed) and some precision (ranks move where logits lie within bfloat16's
# rounding of the target's). Below 1.2 x the gain is within the noise and the conversions.
BFLOAT16_MARGIN = 1.2


def product_rate(
    dtype: torch.dtype = torch.float32, seconds: float = 0.3, shape: tuple[int, int, int] = PRODUCT_SHAPE
) -> float:
    """FLOP/s of `[m, k] @ [k, n]` products (`shape`) in `dtype` at the current thread count: the
    best of repeated products over about `seconds` (at least one), on seeded inputs."""
    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator).to(dtype), torch.randn(k, n, generator=generator).to(dtype)
    best, stop = float("inf"), time.perf_counter() + seconds
    while best == float("inf") or time.perf_counter() < stop:
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * m * k * n / max(best, 1e-9)


@dataclass(frozen=True)
class ProductRates:
    """FLOP/s of the same product in float32 and in bfloat16 (torch accumulates bfloat16 in float32)."""

    float32: float
    bfloat16: float

    @property
    def ratio(self) -> float:
        """bfloat16's rate over float32's."""
        return self.bfloat16 / self.float32


def measure_rates(
    seconds: float = MEASURE_SECONDS, shape: tuple[int, int, int] = KERNEL_SHAPE
) -> ProductRates:
    """This processor's float32 and bfloat16 rates on a kernel-sized product, on one thread (each of
    the OV kernel's workers runs one: `scores.ov_kernel._worker`)."""
    with torch_threads(1):
        return ProductRates(
            product_rate(torch.float32, seconds, shape), product_rate(torch.bfloat16, seconds, shape)
        )


def faster_precision(rates: ProductRates, margin: float = BFLOAT16_MARGIN) -> Precision:
    """bfloat16 where its products are at least `margin` times as fast as float32's, else float32."""
    return "bfloat16" if rates.bfloat16 >= margin * rates.float32 else "float32"


@dataclass(frozen=True)
class KernelPrecision:
    """The OV kernel's product precision, what was asked for, and the rates it was chosen from
    (None: not measured, the precision asked for or fixed by the weights)."""

    dtype: Precision
    asked: KernelDType
    rates: ProductRates | None = None

    def record(self) -> dict[str, object]:
        """Plain values for a run's provenance: the precision, what was asked for, the rates
        (FLOP/s; None where not measured) and the line."""
        rates = self.rates
        return {
            "dtype": self.dtype,
            "asked": self.asked,
            "float32_flops": None if rates is None else rates.float32,
            "bfloat16_flops": None if rates is None else rates.bfloat16,
            "line": self.line(),
        }

    def line(self) -> str:
        """One line saying which precision the kernel's products use and why."""
        head = f"OV kernel products in {self.dtype}"
        if self.rates is not None:
            r = self.rates
            return (
                f"{head}: bfloat16 products {r.ratio:.2g}x float32's on this processor "
                f"({r.bfloat16 / 1e9:.3g} against {r.float32 / 1e9:.3g} GFLOP/s on one thread; "
                f"bfloat16 from {BFLOAT16_MARGIN}x)"
            )
        if self.asked != "auto":
            return f"{head} (asked for)"
        return f"{head} (bfloat16 is weighed only for weights streamed in bfloat16)"


def kernel_precision(
    asked: str, streamed_bfloat16: bool, measure: Callable[[], ProductRates] | None = None
) -> KernelPrecision:
    """The kernel's product precision: the one asked for; with "auto", bfloat16 where the weights
    are streamed in bfloat16 and the bfloat16 products `measure` times (None: `measure_rates`) win
    (`faster_precision`), else float32 (not measured)."""
    if asked not in KERNEL_DTYPES:
        raise HeadscopeError(f"kernel_dtype={asked!r}: choose auto, float32 or bfloat16")
    if asked != "auto":
        return KernelPrecision(asked, asked)  # type: ignore[arg-type]
    if not streamed_bfloat16:
        return KernelPrecision("float32", "auto")
    rates = (measure or measure_rates)()
    return KernelPrecision(faster_precision(rates), "auto", rates)

"""Sequential sampling (docs/methods.md §C): how many prompts a number needs, decided while sampling.

Prompts come from one seeded stream in batches, so the first n prompts of a run are the same for
any budget; after each batch (a *look*, at the sizes `Looks.sizes`) a stopping rule reads the
per-prompt values seen so far and says whether to stop. Two rules, pure functions vectorised over
leading axes (a simulation's repetitions), that read a look's summary (`Seen`: n, mean, sd):

- `width_met` (precision): every component's interval no wider than ± `target`. The width
  depends on the spread of the values, not on their mean, so stopping on it leaves the 95%
  intervals valid (checked by simulation in tests/scores/test_sampling.py);
- `order_settled` (ranking): the `top`-th component's interval is separated from the
  (`top` + 1)-th's. This stops *because* of where the means fell — optional stopping — so a plain
  95% interval recomputed at each look covers less than 95%. The rule spends alpha over the fixed
  schedule of looks (Bonferroni): each look's intervals are at level 1 − (1 − level) / K for K
  looks (`Looks.level`), and those are the intervals reported, wherever the run stops. The
  chance that any of a component's K intervals misses its mean is then at most 1 − level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from headscope.errors import HeadscopeError
from headscope.scores.intervals import LEVEL, t_from_summary, wilson

Rule = Callable[["Seen"], np.ndarray]  # what a look knows -> stop [...]


@dataclass(frozen=True)
class Looks:
    """The fixed schedule of looks: `first` units, then `batch` more at a time, up to `most`."""

    first: int = 32
    batch: int = 32
    most: int = 512

    def __post_init__(self) -> None:
        if not 2 <= self.first <= self.most or self.batch < 1:
            raise HeadscopeError(
                f"looks first={self.first}, batch={self.batch}, most={self.most}: "
                "need 2 <= first <= most and batch >= 1"
            )

    @property
    def sizes(self) -> tuple[int, ...]:
        """The number of units at each look; the last is `most`."""
        sizes = list(range(self.first, self.most, self.batch))
        return (*sizes, self.most)

    def level(self, level: float = LEVEL) -> float:
        """Each look's level under Bonferroni over the looks: 1 − (1 − level) / K."""
        return 1 - (1 - level) / len(self.sizes)


@dataclass(frozen=True)
class Seen:
    """What a look knows of each component: the units so far, their mean and standard deviation
    (ddof 1), [..., component]."""

    n: int
    mean: np.ndarray
    sd: np.ndarray


def seen(values: np.ndarray) -> Seen:
    """The summary of per-unit values [..., unit, component]."""
    n = values.shape[-2]
    mean = values.mean(-2)
    return Seen(n, mean, values.std(-2, ddof=1) if n > 1 else np.full_like(mean, np.nan))


def magnitudes(at: Seen) -> Seen:
    """The look with each mean's sign dropped, for a rule that ranks components by size (a
    knockout's effect, whichever way it goes): the t interval |mean| ± h it gives holds |μ|
    wherever mean ± h holds μ (||μ| − |mean|| ≤ |μ − mean|), so a rule's validity carries over."""
    return Seen(at.n, np.abs(at.mean), at.sd)


def mean_bounds(at: Seen, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """t interval of each component's mean."""
    return t_from_summary(at.mean, at.sd, at.n, level)


def share_bounds(at: Seen, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson interval of each component's share of 1s (values 0 or 1)."""
    return wilson(np.round(at.mean * at.n), at.n, level)


def width_met(low: np.ndarray, high: np.ndarray, target: float) -> np.ndarray:
    """Whether every component's half-width (high − low) / 2 is at most `target`: [..., component]
    -> [...]; an interval not yet defined (NaN) is not narrow enough."""
    with np.errstate(invalid="ignore"):
        return ((high - low) / 2 <= target).all(-1)


def order_settled(estimate: np.ndarray, low: np.ndarray, high: np.ndarray, top: int) -> np.ndarray:
    """Whether the `top` largest estimates are told apart from the rest: with the components
    ranked by `estimate` (largest first; ties by position), the `top`-th's interval lies wholly
    above the (`top` + 1)-th's ([..., component] -> [...]). Rank what should come first largest
    (e.g. the size of a knockout's effect: `magnitudes`)."""
    if not 1 <= top < estimate.shape[-1]:
        raise HeadscopeError(
            f"top={top}: choose 1 to {estimate.shape[-1] - 1} (one less than the components)"
        )
    order = np.argsort(-estimate, axis=-1, kind="stable")
    inside = np.take_along_axis(low, order[..., top - 1 : top], -1)[..., 0]
    outside = np.take_along_axis(high, order[..., top : top + 1], -1)[..., 0]
    return inside > outside


def width_rule(target: float, bounds=mean_bounds, level: float = LEVEL) -> Rule:
    """Stop when every interval (`bounds` at `level`) is within ± `target`."""
    return lambda at: width_met(*bounds(at, level), target)


def order_rule(top: int, looks: Looks, level: float = LEVEL) -> Rule:
    """Stop when the `top`-th mean's interval separates from the next one's, every interval at
    the Bonferroni level of the schedule (`looks.level(level)`): valid under optional stopping.
    Report the intervals at that level too, wherever the run stops (the budget's end included)."""
    return lambda at: order_settled(at.mean, *mean_bounds(at, looks.level(level)), top)


def _running(values: np.ndarray) -> Callable[[int], Seen]:
    """The summary of the first `size` units, for any size, from running sums (one pass)."""
    total, squares = np.cumsum(values, -2), np.cumsum(values**2, -2)  # [..., unit, component]

    def at(size: int) -> Seen:
        mean = total[..., size - 1, :] / size
        spread = np.maximum(squares[..., size - 1, :] - size * mean**2, 0) / (size - 1)
        return Seen(size, mean, np.sqrt(spread))

    return at


def stopping_sizes(values: np.ndarray, looks: Looks, rule: Rule) -> np.ndarray:
    """The units each run takes: the first look at which `rule` stops it, else `looks.most`.

    `values` [..., unit, component] holds every unit the stream would give, in order
    (`looks.most` of them); the rule at a look sees the first `size` only."""
    if values.shape[-2] < looks.most:
        raise HeadscopeError(f"{values.shape[-2]} units given; the looks go up to {looks.most}")
    at = _running(values)
    taken = np.full(values.shape[:-2], looks.most)
    going = np.ones(values.shape[:-2], dtype=bool)
    for size in looks.sizes[:-1]:
        stop = going & rule(at(size))
        taken[stop] = size
        going &= ~stop
    return taken


def intervals_at(
    values: np.ndarray, sizes: np.ndarray, bounds=mean_bounds, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Each run's intervals over its first `sizes` units: values [run, unit, component],
    sizes [run] -> low, high [run, component] (the units after a run's stop are not read)."""
    at = _running(values)
    low = np.full((values.shape[0], values.shape[-1]), np.nan)
    high = low.copy()
    for size in np.unique(sizes):
        runs = sizes == size
        low[runs], high[runs] = (bound[runs] for bound in bounds(at(int(size)), level))
    return low, high

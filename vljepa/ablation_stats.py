"""Seeds, intervals and verdicts of the ablation tables (pure Python: the report and its tests use it).

Every variant is trained with the same seeds as its sweep's default (a seed fixes the data order
and the init of whatever is new), so a variant's Δ is taken per seed, paired: d_s = variant_s −
default_s, in points; its 95 % interval is mean(d) ± t(0.975, n−1) · sd(d) / √n.

A row is **reproduced** when the sign of the paper's Δ agrees and our interval excludes 0, or,
for the paper's near-zero rows (|Δ| < ``FLAT`` points), when our interval includes 0 as well.
**Inside the noise**: our interval includes 0 where the paper saw an effect. **Not reproduced**:
our interval excludes 0 with the opposite sign, or excludes 0 where the paper's Δ is near zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLAT = 1.0  # points: a paper Δ smaller than this is "no effect" (its rows are 8-dataset averages)

# Two-sided 95 % Student t quantiles, t(0.975, df).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000}


def t975(df: int) -> float:
    """t(0.975, df); between tabulated dfs the next smaller df's (a slightly wider interval)."""
    if df < 1:
        raise ValueError("an interval needs at least two paired seeds")
    return T975[max(k for k in T975 if k <= df)] if df <= 60 else 1.96


@dataclass(frozen=True)
class Spread:
    mean: float
    sd: float  # sample standard deviation (n − 1); 0.0 for one value
    n: int


def spread(values: list[float]) -> Spread:
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Spread(mean=mean, sd=sd, n=n)


@dataclass(frozen=True)
class Delta:
    mean: float  # points
    low: float | None  # the 95 % interval; None with fewer than two paired seeds
    high: float | None
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def paired_delta(variant: dict[int, float], default: dict[int, float]) -> Delta:
    """Δ in points (×100) of ``variant`` against ``default``, both {seed: value in [0, 1]}, paired by seed."""
    seeds = sorted(set(variant) & set(default))
    if not seeds:
        raise ValueError(f"no seed in common: variant {sorted(variant)}, default {sorted(default)}")
    d = [100.0 * (variant[s] - default[s]) for s in seeds]
    s = spread(d)
    if s.n < 2:
        return Delta(mean=s.mean, low=None, high=None, n=1)
    half = t975(s.n - 1) * s.sd / math.sqrt(s.n)
    return Delta(mean=s.mean, low=s.mean - half, high=s.mean + half, n=s.n)


def verdict(paper: float, ours: Delta) -> str:
    """"reproduced" / "inside the noise" / "not reproduced" (module doc); "one seed" without an interval."""
    if ours.low is None:
        return "one seed"
    if abs(paper) < FLAT:
        return "reproduced (both flat)" if not ours.excludes_zero else "not reproduced (paper flat)"
    if not ours.excludes_zero:
        return "inside the noise"
    return "reproduced" if (ours.mean > 0) == (paper > 0) else "not reproduced"

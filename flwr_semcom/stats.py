"""Statistics over seeds: mean, sample std, Student-t 95 % intervals, paired tests, bits-to-target.

A comparison reported by this project rests on several seeds of the same experiment
(issue #18, Build 1/3). This module holds the few estimators those reports use, so every
experiment computes them the same way:

- :func:`summarize` / :func:`ci95`: the mean over ``n`` seeds, the sample standard deviation
  ``s`` (divisor ``n - 1``) and the two-sided Student-t interval
  ``mean ± t_{0.975, n-1} · s / sqrt(n)``. With one seed there is no interval (``None``).
- :func:`paired_test`: two methods run on the same seeds; the paired t-test or the Wilcoxon
  signed-rank test on the per-seed differences ``a_i - b_i``, with the mean difference and its
  Student-t 95 % interval.
- :func:`bits_to_target`: the cumulative bits at which an accuracy curve first reaches a target,
  linearly interpolated between evaluation points, so the measure moves smoothly with the curve
  instead of jumping by a whole round.

Seeds are treated as independent draws; the interval is for the mean of the experiment over
seeds (the run-to-run spread), not for test-set sampling within one run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as _sp

__all__ = [
    "PairedTest",
    "Summary",
    "bits_to_target",
    "ci95",
    "paired_test",
    "sample_std",
    "summarize",
    "t_quantile",
]

LEVEL = 0.95


def _finite_1d(values: npt.ArrayLike, name: str = "values") -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: expected at least one value, got none")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: every value must be finite, got {arr.tolist()}")
    return arr


def t_quantile(n: int, level: float = LEVEL) -> float:
    """Two-sided Student-t quantile ``t_{(1+level)/2, n-1}`` for ``n`` samples.

    For ``n = 5`` and ``level = 0.95`` this is ``t_{0.975, 4} = 2.776445``.

    Raises
    ------
    ValueError
        If ``n < 2`` (no degrees of freedom) or ``level`` is not in ``(0, 1)``.
    """
    if n < 2:
        raise ValueError(f"n: the t quantile needs n >= 2 samples, got {n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must be in (0, 1), got {level}")
    return float(_sp.t.ppf(0.5 + level / 2.0, n - 1))


def sample_std(values: npt.ArrayLike) -> float | None:
    """Sample standard deviation ``sqrt(sum((x - mean)^2) / (n - 1))``; ``None`` if ``n = 1``."""
    arr = _finite_1d(values)
    if arr.size < 2:
        return None
    return float(np.std(arr, ddof=1))


def ci95(values: npt.ArrayLike, level: float = LEVEL) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean: ``mean ± t_{0.975, n-1} · s / sqrt(n)``.

    Parameters
    ----------
    values
        One finite value per seed.
    level
        Coverage of the interval (default 0.95).

    Returns
    -------
    tuple[float, float] | None
        ``(low, high)``; ``None`` when there is a single value (no spread to estimate, so no
        interval: reported as ``null``). Identical values give a zero-width interval.

    Raises
    ------
    ValueError
        If ``values`` is empty or holds a non-finite number.
    """
    arr = _finite_1d(values)
    if arr.size < 2:
        return None
    mean = float(np.mean(arr))
    half = t_quantile(arr.size, level) * float(np.std(arr, ddof=1)) / math.sqrt(arr.size)
    return mean - half, mean + half


@dataclass(frozen=True)
class Summary:
    """Mean, sample std and Student-t interval of one metric over ``n`` seeds.

    ``std``, ``ci95_low`` and ``ci95_high`` are ``None`` when ``n = 1``.
    """

    mean: float
    std: float | None
    ci95_low: float | None
    ci95_high: float | None
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: npt.ArrayLike, level: float = LEVEL) -> Summary:
    """Mean, sample std (divisor ``n - 1``) and Student-t interval of ``values``.

    Raises
    ------
    ValueError
        If ``values`` is empty or holds a non-finite number.
    """
    arr = _finite_1d(values)
    interval = ci95(arr, level)
    return Summary(
        mean=float(np.mean(arr)),
        std=sample_std(arr),
        ci95_low=None if interval is None else interval[0],
        ci95_high=None if interval is None else interval[1],
        n=int(arr.size),
    )


@dataclass(frozen=True)
class PairedTest:
    """Result of a paired comparison of methods ``a`` and ``b`` over the same seeds.

    Attributes
    ----------
    test
        ``"paired-t"`` or ``"wilcoxon"``.
    statistic
        Paired t: ``t = mean(d) / (s_d / sqrt(n))`` with ``d_i = a_i - b_i`` (``±inf`` when all
        differences are equal and non-zero, ``0`` when all are zero). Wilcoxon: the smaller of
        the positive-rank and negative-rank sums (scipy's two-sided statistic).
    p_value
        Two-sided p-value.
    n
        Number of pairs (seeds).
    mean_diff, ci95_low, ci95_high
        ``mean(a - b)`` and its Student-t 95 % interval (the same for both tests).
    """

    test: str
    statistic: float
    p_value: float
    n: int
    mean_diff: float
    ci95_low: float
    ci95_high: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_test(
    a: npt.ArrayLike, b: npt.ArrayLike, test: Literal["t", "wilcoxon"] = "t"
) -> PairedTest:
    """Paired two-sided test of ``a`` against ``b``, one pair per seed.

    ``test="t"`` is the paired t-test (``n - 1`` degrees of freedom; assumes roughly normal
    differences). ``test="wilcoxon"`` is the Wilcoxon signed-rank test as computed by
    :func:`scipy.stats.wilcoxon` (zero differences dropped, exact distribution for small ``n``
    without ties). Note that with ``n`` pairs the smallest two-sided Wilcoxon p-value is
    ``2 / 2^n``: ``0.0625`` for 5 seeds, so 5 seeds can never reach ``p < 0.05`` with it.
    If every difference is zero the Wilcoxon result is ``statistic = 0``, ``p_value = 1``.

    Raises
    ------
    ValueError
        If the sequences differ in length, have fewer than 2 pairs, hold a non-finite value,
        or ``test`` is unknown.
    """
    x = _finite_1d(a, "a")
    y = _finite_1d(b, "b")
    if x.size != y.size:
        raise ValueError(f"a, b: paired samples need equal lengths, got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError(f"a, b: a paired test needs at least 2 pairs, got {x.size}")
    d = x - y
    n = int(d.size)
    mean_d = float(np.mean(d))
    sd = float(np.std(d, ddof=1))
    half = t_quantile(n) * sd / math.sqrt(n)
    if test == "t":
        name = "paired-t"
        if sd > 0.0:
            stat = mean_d / (sd / math.sqrt(n))
            p = float(2.0 * _sp.t.sf(abs(stat), n - 1))
        else:  # identical differences: no spread
            stat = 0.0 if mean_d == 0.0 else math.copysign(math.inf, mean_d)
            p = 1.0 if mean_d == 0.0 else 0.0
    elif test == "wilcoxon":
        name = "wilcoxon"
        if np.all(d == 0.0):
            stat, p = 0.0, 1.0
        else:
            res = _sp.wilcoxon(d)
            stat, p = float(res.statistic), float(res.pvalue)
    else:
        raise ValueError(f"test: expected 't' or 'wilcoxon', got {test!r}")
    return PairedTest(name, stat, p, n, mean_d, mean_d - half, mean_d + half)


def bits_to_target(bits: npt.ArrayLike, accuracy: npt.ArrayLike, target: float) -> float | None:
    """Cumulative bits at which ``accuracy`` first reaches ``target``, linearly interpolated.

    ``bits[i]`` is the cumulative number of bits sent when ``accuracy[i]`` was measured
    (per round, per batch or per any other evaluation point). Let ``i`` be the first index with
    ``accuracy[i] >= target``:

    - ``i = 0``: the result is ``bits[0]`` (no earlier point to interpolate from; prepend the
      untrained point ``(0, accuracy_0)`` to interpolate from zero);
    - ``i > 0``: with ``(x0, y0) = (bits[i-1], accuracy[i-1])`` (so ``y0 < target``) and
      ``(x1, y1) = (bits[i], accuracy[i])``, the result is
      ``x0 + (target - y0) / (y1 - y0) · (x1 - x0)``;
    - no such ``i``: ``None`` (never reached; reported as ``null``).

    Only the first crossing counts; a later dip below the target does not change the result.
    The same function gives rounds-to-target with ``bits = [1, 2, ..., R]``.

    Raises
    ------
    ValueError
        If the sequences are empty, differ in length, hold non-finite values, ``bits``
        decreases anywhere, or ``target`` is not finite.
    """
    x = _finite_1d(bits, "bits")
    y = _finite_1d(accuracy, "accuracy")
    if x.size != y.size:
        raise ValueError(f"bits, accuracy: need equal lengths, got {x.size} and {y.size}")
    if np.any(np.diff(x) < 0):
        raise ValueError(f"bits: must be cumulative (non-decreasing), got {x.tolist()}")
    if not math.isfinite(target):
        raise ValueError(f"target: must be finite, got {target}")
    hit = np.flatnonzero(y >= target)
    if hit.size == 0:
        return None
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = float(x[i - 1]), float(x[i]), float(y[i - 1]), float(y[i])
    return x0 + (target - y0) / (y1 - y0) * (x1 - x0)

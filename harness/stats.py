"""The statistics of aggregate.py's tables: mean ± sd over seeds, Welch's and the paired t-test (SciPy), and
Holm's adjustment. Torch-free; SciPy is imported when a test is computed."""

from __future__ import annotations

import contextlib
import math
import statistics
import warnings
from collections.abc import Iterator


def mean_sd(values: list[float], ddof: int) -> tuple[float, float | None]:
    """Mean and sd (ddof 1: sample, 0: population); sd is None for a single value."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, statistics.stdev(values) if ddof == 1 else statistics.pstdev(values)


@contextlib.contextmanager
def quiet_constant_group() -> Iterator[None]:
    """Silences SciPy's "catastrophic cancellation" warning, raised when a sample's values are all equal or
    nearly so: for Welch, one group at chance (10.00% on every seed), where t is defined by the other group's
    variance alone and SciPy computes it; for the paired test, per-seed differences equal to rounding. The
    warning would only repeat for every such cell of every table."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation", RuntimeWarning)
        yield


def welch_p_value(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (scipy.stats.ttest_ind, equal_var=False); None if undefined."""
    if len(a) < 2 or len(b) < 2 or (statistics.variance(a) == 0 and statistics.variance(b) == 0):
        return None
    from scipy import stats  # deferred: only the comparison needs it
    with quiet_constant_group():
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def paired_difference(a: dict, b: dict) -> tuple[float, float | None, float | None] | None:
    """Per-seed accuracy differences of two groups that hold the same seeds (the methods share each seed's
    initialisation and data order): (mean, sd, two-sided p of the paired t-test, scipy.stats.ttest_rel); None
    when their seeds differ or there are fewer than two; p None when every difference is the same.

    Example:
        >>> a, b = {"seeds": [1, 2, 3], "acc": [90.0, 91.0, 92.5]}, {"seeds": [1, 2, 3], "acc": [89.0, 90.5, 91.0]}
        >>> mean, sd, p = paired_difference(a, b)
        >>> round(mean, 3), round(sd, 3), round(p, 3)
        (1.0, 0.5, 0.074)
        >>> paired_difference(a, {"seeds": [1, 2, 4], "acc": [1.0, 2.0, 3.0]}) is None
        True
    """
    if a["seeds"] != b["seeds"] or len(a["seeds"]) < 2:
        return None
    differences = [x - y for x, y in zip(a["acc"], b["acc"])]
    mean, sd = mean_sd(differences, ddof=1)
    if not sd:
        return mean, sd, None
    from scipy import stats  # deferred: only the comparison needs it
    with quiet_constant_group():
        p = float(stats.ttest_rel(a["acc"], b["acc"]).pvalue)
    return mean, sd, None if math.isnan(p) else p


def holm_adjust(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error control over the given tests); None stays None.

    Args:
        p_values: one p-value per test (None: no test), in any order.
    Returns:
        The adjusted p-values in the same order: the k-th smallest of m is multiplied by m - k + 1, made
        non-decreasing in that order, capped at 1. A test survives at level a when its adjusted p < a.

    Example:
        >>> holm_adjust([0.01, 0.04, None, 0.03])
        [0.03, 0.06, None, 0.06]
    """
    order = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[i]))
        adjusted[i] = round(running, 12)  # no float noise in the printed value
    return adjusted

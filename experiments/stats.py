"""Statistics of repeated runs: Student's t, a mean's confidence interval, Welch's difference of means.

Small and exact (no SciPy): the t distribution's CDF through the regularized
incomplete beta function, its quantile by bisection. Used by
``experiments.sweep`` and ``experiments.seeds``.
"""
import math
import statistics


def _continued_fraction(a, b, x):
    """The continued fraction of the incomplete beta function (modified Lentz evaluation)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def regularized_beta(a, b, x):
    """I_x(a, b), the regularized incomplete beta function, for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # the fraction converges fast on the side of the mean a / (a + b); the other side by symmetry
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    """The t with P(T <= t) = p, by bisection on :func:`t_cdf` (``t_quantile(0.975, 9)`` = 2.262157)."""
    if not (0.0 < p < 1.0 and df > 0):
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def describe(values):
    """n, mean, sample standard deviation, the mean's Student-t 95% confidence interval, min, median, max.

    With one value the standard deviation is 0 and there is no interval (None).
    """
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95": None, "min": None, "median": None, "max": None}
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    ci = None
    if n > 1:
        half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"n": n, "mean": mean, "sd": sd, "ci95": ci, "min": min(values), "median": statistics.median(values),
            "max": max(values)}


def welch(a, b):
    """mean(a) - mean(b), its standard error and Welch's 95% confidence interval with the
    Welch-Satterthwaite degrees of freedom. Needs two values on each side (else None)."""
    if len(a) < 2 or len(b) < 2:
        return None
    da, db = describe(a), describe(b)
    va, vb = da["sd"] ** 2 / da["n"], db["sd"] ** 2 / db["n"]
    difference, se = da["mean"] - db["mean"], math.sqrt(va + vb)
    if se == 0.0:                              # both sides constant: no spread to build an interval from
        return {"difference": difference, "se": 0.0, "df": None, "ci95": [difference, difference]}
    df = (va + vb) ** 2 / (va ** 2 / (da["n"] - 1) + vb ** 2 / (db["n"] - 1))
    half = t_quantile(0.975, df) * se
    return {"difference": difference, "se": se, "df": df, "ci95": [difference - half, difference + half]}

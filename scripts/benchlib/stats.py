"""Percentiles and A/B pair statistics."""

import statistics


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --------------------------------------------------------------------------- statistics


def describe_pairs(pairs):
    """pairs: list of dicts with livecopy, raw (seconds)."""
    a = [p["livecopy"] for p in pairs]
    b = [p["raw"] for p in pairs]
    ratios = [x / y for x, y in zip(a, b)]
    diffs = [(x - y) * 1000 for x, y in zip(a, b)]
    return {
        "a_median": statistics.median(a), "b_median": statistics.median(b),
        "a_min": min(a), "a_max": max(a), "b_min": min(b), "b_max": max(b),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "ratio_of_medians": statistics.median(a) / statistics.median(b),
        "diff_median_ms": statistics.median(diffs), "diff_min_ms": min(diffs), "diff_max_ms": max(diffs),
        "median_diff_ms": (statistics.median(a) - statistics.median(b)) * 1000,
    }

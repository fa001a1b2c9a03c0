"""What the bench scripts share: percentiles, a progress line, and the final report."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence

import orjson


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of `values`."""
    return {name: round(value, 2) for name, value in (
        ("p50", percentile(values, 50)), ("p95", percentile(values, 95)),
        ("p99", percentile(values, 99)), ("max", max(values, default=math.nan)))}


def distribution(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of durations given in seconds, in milliseconds."""
    return {name: round(1000 * value, 2) for name, value in (
        ("p50_ms", percentile(values_s, 50)), ("p95_ms", percentile(values_s, 95)),
        ("p99_ms", percentile(values_s, 99)), ("max_ms", max(values_s, default=math.nan)))}


def progress(line: str) -> None:
    """One line on stderr, rewritten in place, so stdout stays clean for --json."""
    print(f"\r{line:<78}", end="", file=sys.stderr, flush=True)


def emit(title: str, results: Mapping[str, object], *, as_json: bool) -> None:
    """The summary: JSON on stdout for machines, else an aligned table."""
    print(file=sys.stderr)
    if as_json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return
    print(title)
    rows = list(_flatten(results))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def _flatten(results: Mapping[str, object], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for name, value in results.items():
        if isinstance(value, Mapping):
            rows += _flatten(value, f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", value))
    return rows

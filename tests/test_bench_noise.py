"""`bench` never prints a ratio without its uncertainty, and says when a spread is too wide to trust."""

from __future__ import annotations

import pytest

from archspec.runtime import NOISY_SPREAD, BenchRow, Timing, bench_notes, bench_table

MS = 1e-3


def timing(q1: float, median: float, q3: float) -> Timing:
    return Timing(median * MS, q1 * MS, q3 * MS, q1 * MS, q3 * MS, calls=10, rounds=15)


def row(torch: Timing, ort: Timing) -> BenchRow:
    return BenchRow("net", 1, 1_000_000, torch, ort, threads=1, device="cpu", exporter="dynamo", input_shape=(3, 8, 8))


def test_steady_timings_print_the_ratio_with_its_range_and_no_notes() -> None:
    r = row(timing(9.9, 10.0, 10.1), timing(4.95, 5.0, 5.05))
    assert r.speedup == pytest.approx(2.0) and r.speedup_range == pytest.approx((9.9 / 5.05, 10.1 / 4.95))
    assert r.noisy == () and bench_notes([r]) == []
    assert "| 2.00x (1.96-2.04) |" in bench_table([r])


def test_a_wide_spread_is_marked_and_explained() -> None:
    # the case: a median of 84.9 ms with an IQR of 394 ms
    r = row(timing(1.8, 84.9, 395.8), timing(2.2, 2.3, 2.4))
    assert r.torch.spread > NOISY_SPREAD and r.noisy == ("torch eager",)
    cell = bench_table([r]).splitlines()[2].split(" | ")[8]
    assert cell == f"{r.speedup:.2f}x ({1.8 / 2.4:.2f}-{395.8 / 2.2:.2f}) noisy"
    notes = bench_notes([r])
    assert notes[0].startswith("net batch 1: torch eager's spread is too wide to trust: IQR 394 ms is 464% of")
    assert "neither is clearly faster" in notes[1]  # 0.75-180: the interval holds 1
    assert "--threads 1" in notes[-1] and "--rounds" in notes[-1]

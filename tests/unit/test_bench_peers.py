"""bench/peers.py's arithmetic, by hand: medians and spreads, ratios that read "> 1: alignlab faster" for
times and for throughput alike, and a row whose final losses disagree is not counted."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "bench" / "peers.py")
peers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peers)


def tool(wall, cpu, runtime, speed, loss):
    runs = [dict(zip(peers.METRICS, values)) for values in zip(wall, cpu, runtime, speed, [100.0] * len(wall), loss)]
    return {m: peers.summary([r[m] for r in runs]) for m in peers.METRICS}


def test_summary_is_the_median_and_the_spread():
    assert peers.summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert peers.summary([4.0, 1.0, 2.0, 3.0])["median"] == 2.5


def test_ratios_read_above_one_when_alignlab_is_faster():
    ours = tool([10, 12, 11], [20, 22, 21], [5, 6, 4], [200, 180, 220], [1.5, 1.5, 1.5])
    peer = tool([22, 20, 24], [40, 44, 42], [6, 6, 7], [150, 160, 140], [1.5, 1.5, 1.5])
    ratios = peers.row_ratios(ours, peer)
    assert ratios == pytest.approx({"wall_s": 22 / 11, "cpu_s": 42 / 21, "train_runtime": 6 / 5,
                                    "samples_per_s": 200 / 150})


def test_a_row_whose_losses_disagree_is_not_counted():
    ours = tool([10], [20], [5], [200], [1.50000])
    assert peers.row_ratios(ours, tool([20], [40], [6], [150], [1.50001])) is not None  # 6.7e-6 relative
    assert peers.row_ratios(ours, tool([20], [40], [6], [150], [1.51])) is None
    text = peers.table([{"workload": "dpo", "rows": 8, "pairs": 1, "tools": {"alignlab": ours}, "ratios": None}])
    assert "| dpo | llamafactory | losses disagree: not counted" in text


def test_a_grpo_row_counts_when_the_mean_rewards_agree_within_the_tolerance():
    """GRPO samples differently in each tool: its `train_loss` slot holds the mean reward over the run, and
    the row counts when the tools' medians are within REWARD_ATOL (0.05) of each other."""
    ours = tool([10], [20], [5], [120], [0.46])
    gate = peers.GATES["grpo"]
    assert peers.row_ratios(ours, tool([13], [26], [8], [75], [0.50]), gate)["samples_per_s"] == 120 / 75
    assert peers.row_ratios(ours, tool([13], [26], [8], [75], [0.52]), gate) is None
    assert peers.row_ratios(ours, tool([13], [26], [8], [75], [0.50])) is None  # as a loss: not the same


def test_packed_rows_gate_their_losses_at_one_percent_or_not_at_all():
    """Both tools packed: losses within 1% count; alignlab packed against LF unpacked (`sft_packed`) is
    different work by design: counted without a loss check, and the table says so."""
    ours = tool([10], [20], [4], [300], [4.30])
    assert peers.row_ratios(ours, tool([12], [24], [6], [200], [4.33]), peers.GATES["sft_packing"]) is not None
    assert peers.row_ratios(ours, tool([12], [24], [6], [200], [4.40]), peers.GATES["sft_packing"]) is None
    loose = peers.row_ratios(ours, tool([12], [24], [6], [200], [4.10]), peers.GATES["sft_packed"])
    assert loose["train_runtime"] == pytest.approx(6 / 4)
    text = peers.table([{"workload": "sft_packed", "rows": 8, "pairs": 1, "tools": {"alignlab": ours},
                         "gate": None, "ratios": loose}])
    assert "| sft_packed (different work by design: no loss check) | llamafactory | 1.20× | 1.20× | 1.50× |" in text


def test_growth_fits_the_fixed_cost_and_the_cost_per_row():
    assert peers.fit_line([1000, 4000, 16000], [5 + 0.002 * x for x in (1000, 4000, 16000)]) == pytest.approx((5, 0.002))
    assert peers.fit_line([0, 1, 2], [0, 2, 1]) == pytest.approx((0.5, 0.5))  # least squares, not through points

    def row(rows, ours, lf):
        return {"workload": f"2M, {rows} rows", "rows": rows,
                "tools": {"alignlab": tool([ours], [2 * ours], [ours - 3], [1], [1.0]),
                          "llamafactory": tool([lf], [2 * lf], [lf - 4], [1], [1.0])}}

    text = peers.growth_table([row(n, 3 + 0.006 * n, 5 + 0.006 * n) for n in peers.GROWTH_ROWS])
    assert "| 2M, 1000 rows | 1000 | alignlab | 9.00 (9.00–9.00) | 18.00 (18.00–18.00) | 9.00 |" in text
    assert "| alignlab | 3.00 | 6.00 | 6.00 | 12.00 |" in text and "| llamafactory | 5.00 | 6.00 | 10.00 | 12.00 |" in text


def test_serving_rows_take_each_tools_median_and_divide_ours_by_the_peers():
    spec = importlib.util.spec_from_file_location("bench_serve_peers", ROOT / "bench" / "serve_peers.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)

    def run(rps_1, rps_16):
        return [{"concurrency": c, "requests_per_s": r, "latency_p50_ms": 1000 / r, "output_tokens_per_s": 32 * r,
                 "errors": 0} for c, r in ((1, rps_1), (16, rps_16))]

    rows = serve.summarise({"alignlab": [run(20, 120), run(22, 150), run(21, 140)],
                            "llamafactory": [run(19, 25), run(20, 24), run(18, 20)]})
    assert [r["concurrency"] for r in rows] == [1, 16]
    assert rows[1]["alignlab"]["rps"] == 140 and rows[1]["llamafactory"]["rps"] == 24
    assert rows[1]["ratio"] == pytest.approx(140 / 24) and rows[0]["ratio"] == pytest.approx(21 / 19)
    assert rows[1]["alignlab"]["tokens"] == pytest.approx(32)
    assert "| 16 | 140.00 (120.00–150.00) | 24.00 (20.00–25.00) | 5.83× |" in serve.table(rows)

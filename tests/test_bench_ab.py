"""scripts/bench.py --against: the A/B arithmetic, the report section, the side check.

No benchmark runs here: the pairs are made up, and the side check starts one
``python -c`` per case.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _run(seconds: float, rss: float = 100.0) -> object:
    return bench.Run("x", seconds, 0, rss, 0.0, "")


def test_pair_stats_are_medians_of_each_side_and_of_the_ratios() -> None:
    st = bench.pair_stats([(1.0, 2.0), (3.0, 3.0), (2.2, 2.0)])
    assert (st.a, st.b, st.pairs) == (2.2, 2.0, 3)
    # Ratios 0.5, 1.0, 1.1: the median ratio is not median(A) / median(B) (1.1).
    assert (st.ratio, st.low, st.high) == pytest.approx((1.0, 0.5, 1.1))
    with pytest.raises(ValueError):
        bench.pair_stats([])


@pytest.mark.parametrize(("ratios", "verdict"), [
    ([0.9, 1.2], "within noise"),  # min-max includes 1.0
    ([1.0], "within noise"),
    ([1.04, 1.05, 1.06], "within noise"),  # median within 5%
    ([1.06, 1.08, 1.2], "slower"),
    ([1.01, 1.3, 1.3], "slower"),
    ([0.8, 0.9, 0.94], "faster"),
    ([0.95, 0.96, 0.99], "within noise"),
])
def test_verdict_rule(ratios: list[float], verdict: str) -> None:
    assert bench.pair_stats([(r, 1.0) for r in ratios]).verdict == verdict


def test_records_keep_pairs_in_order_and_the_section_shows_rss_only_where_measured() -> None:
    b = bench.Bench(bench.QUICK, 1, Path("/nonexistent"), big=False)
    assert not b.paired
    b.record_ab("overhead", "one", [_run(1.0)], rss=True)  # unpaired: nothing kept
    assert b.ab == {}
    b.sides = [bench.Side("A", ROOT, Path("/")), bench.Side("B", ROOT, Path("/"))]
    assert b.paired
    for a, bb in ((1.0, 1.0), (2.0, 1.0), (1.5, 1.0)):
        b.record_ab("overhead", "`export --db F`", [_run(a, 200), _run(bb, 100)], rss=True)
    b.record_ab("startup", "`mpexport --help`", [_run(0.1), _run(0.1)], rss=False)
    record = b.ab[("overhead", "`export --db F`")]
    assert [(x.seconds, y.seconds) for x, y in record.pairs] == [(1.0, 1.0), (2.0, 1.0),
                                                                 (1.5, 1.0)]
    lines = bench.render_ab(list(b.ab.values()), "HEAD~1", "abc1234", ("1", "0"), True)
    assert lines[0] == "## A/B against HEAD~1 (abc1234)"
    rows = [line for line in lines if line.startswith(("| overhead", "| startup"))]
    assert rows == [
        "| overhead | `export --db F` | wall s | 1.500 | 1.000 | 1.500 | 1.000-2.000 | 3 "
        "| within noise |",
        "| overhead | `export --db F` | peak RSS MB | 200 | 100 | 2.000 | 2.000-2.000 | 3 "
        "| slower |",
        "| startup | `mpexport --help` | wall s | 0.100 | 0.100 | 1.000 | 1.000-1.000 | 1 "
        "| within noise |",
    ]
    assert any("dedupe" in line for line in lines)


def test_side_env_and_label() -> None:
    plain = bench.Side("A")
    env = {"PYTHONPATH": "/elsewhere", "X": "1"}
    assert plain.env(env) is env and plain.label("run", False) == "run"
    side = bench.Side("B", Path("/tree"), Path("/"))
    assert side.env(env) == {"PYTHONPATH": "/tree", "X": "1"}
    assert side.label("run", True) == "run [B]"


def test_check_side_accepts_the_tree_it_imports_and_refuses_another(tmp_path: Path) -> None:
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    assert bench.check_side(bench.Side("A", ROOT, cwd), env)
    # A root without mpexport: the import falls through to whatever is installed.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(bench.BenchError, match=r"would import|importing mpexport failed"):
        bench.check_side(bench.Side("B", empty, cwd), env)
    # The cwd comes first on sys.path for -c and -m: a tree as cwd shadows PYTHONPATH.
    with pytest.raises(bench.BenchError, match="would import"):
        bench.check_side(bench.Side("B", empty, ROOT), env)


def test_check_run_counts_every_manifest_row_of_a_kept_database(tmp_path: Path) -> None:
    """A day loaded again (lookback) adds a manifest row: the total covers both runs."""
    import duckdb

    db = tmp_path / "kept.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE events (event VARCHAR, time TIMESTAMPTZ, distinct_id VARCHAR,"
                    " insert_id VARCHAR)")
        con.execute("INSERT INTO events SELECT 'e', to_timestamp(i), 'd', CAST(i AS VARCHAR) "
                    "FROM range(105) t(i)")
        con.execute("CREATE TABLE _mpexport_chunks (received BIGINT)")
        con.execute("INSERT INTO _mpexport_chunks VALUES (100), (105)")
    run = bench.Run("again", 1.0, 0, 100.0, 1.0, "")
    with pytest.raises(bench.BenchError, match="manifest says 205 received, expected 105"):
        bench.check_run(run, 105, None, "db", db, exact_rows=105)
    bench.check_run(run, 105, None, "db", db, exact_rows=105, received_total=205)
    assert run.checked == "105 rows, 2 chunks"


def test_new_scenarios_are_known_and_quick_is_smaller() -> None:
    assert {"paced", "lookback"} <= set(bench.SCENARIOS)
    for name in ("lookback_day", "paced_per_day", "scale_mid_per_day"):
        assert getattr(bench.QUICK, name) < getattr(bench.DEFAULT, name)
    assert bench.PINNED_BUDGET == {"MPEXPORT_MEMORY_LIMIT": "256MB"}

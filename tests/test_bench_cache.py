"""``python -m pwlnet.bench cache`` on a small configuration: rows, table and plots."""

import io

import pytest

from pwlnet import bench_cache


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    trained = bench_cache.train_models(tmp, ("daphnet",), (16.0,), ("linf",), hidden=(16, 16), epochs=5,
                                       log=io.StringIO())
    return tmp, trained


def test_rows_and_table(small):
    tmp, trained = small
    out = io.StringIO()
    assert [t.label for t in trained] == ["plain", "margin 16 (linf)"]
    rows = bench_cache.cache_table(trained, entries=(4,), metrics=("linf",), clock_mhz=40.0,
                                   out=out, log=io.StringIO())
    assert len(rows) == 2
    for r in rows:
        assert r["inputs"] == 5955 and r["metric"] == "linf" and r["entries"] == 4
        assert r["false_hits"] == 0 and r["disagree"] == 0        # the tie guard holds
        assert 0 <= r["hit_rate"] <= 1 and 0 <= r["preload_hit_rate"] <= 1
        assert r["us_without"] == pytest.approx(r["cycles_without"] / 40.0)
        # the host writes one entry image per miss that made an entry, never more
        assert 0 <= r["bytes_per_inference"] <= (1 - r["hit_rate"]) * r["entry_bytes"] + 1e-9
        assert r["cycles_with"] < r["cycles_without"] or r["hit_rate"] == 0
    text = out.getvalue()
    assert text.count("| daphnet (5955) |") == 2 and "µs/inference at 40 MHz" in text


def test_plots(small, tmp_path):
    _, trained = small
    rows = bench_cache.cache_table(trained, entries=(16,), metrics=("linf",), out=io.StringIO(),
                                   log=io.StringIO())
    pngs = bench_cache.margin_plots(rows, trained, tmp_path)
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_output_directory(tmp_path):
    import argparse
    args = argparse.ArgumentParser()
    bench_cache.add_bench_arguments(args)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        bench_cache.cli_bench_cache(args.parse_args(["--out", str(tmp_path / "nope")]))

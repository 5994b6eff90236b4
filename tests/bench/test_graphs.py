"""Tests for graphwsss.bench.graphs: the graph-builder benchmark on the bundled sample."""

import csv
import json

import pytest
import torch

from graphwsss.cli import main
from graphwsss.graphs import RadiusGraphBuilder
from graphwsss.settings import load_run_settings
from graphwsss.bench.graphs import (COLUMNS, bench_graphs, format_table, headline,
                                           radius_graph_loop_reference, radius_vs_loop,
                                           same_edges)

TINY = ["limit=2", "propagator.epochs_first=2", "propagator.epochs_second=1",
        "crf.enabled=false", "device=cpu"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory, sample_root):
    out = tmp_path_factory.mktemp("bench")
    # The settings the command line loads (box defaults included), so that it resumes the run.
    settings = load_run_settings(None, [item for item in TINY if not item.startswith("limit")])
    result = bench_graphs(sample_root, out, ["backbone", "knn"], settings, limit=2,
                          radius_loop=False, show_progress=False)
    return out, result


def test_outputs_and_fields(bench):
    out, result = bench
    assert result["images"] == 2 and result["radius_vs_loop"] is None
    saved = json.loads((out / "bench_graphs.json").read_text())
    assert saved["builders"] == result["builders"]
    with open(out / "bench_graphs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["builder"] for row in rows] == ["backbone", "knn"]
    assert tuple(rows[0]) == COLUMNS
    for row in result["builders"]:
        assert set(row) == set(COLUMNS)
        assert row["images"] == 2 and row["device"] == "cpu"
        assert row["build_ms"] > 0
        assert row["nodes"] == 27 * 40  # both sample images are 213 x 320: a 27 x 40 grid
        assert row["nodes"] < row["edges"] < row["nodes"] ** 2
        assert 0.5 < row["purity"] <= 1 and row["node_purity"] == 1.0  # nodes = grid cells
        if row["memory_method"] == "rss_hwm":
            assert row["peak_mib"] > 0
    backbone, knn = result["builders"]
    assert backbone["edges"] == pytest.approx(47668)  # the r = 4 disc on a 27 x 40 grid
    assert 0 < backbone["miou"] <= 100 and 0 <= backbone["contour_f"] <= 100
    assert backbone["note"] is None
    # Seeds were made once and shared with the second run.
    for seed in (out / "backbone" / "seeds").glob("*.png"):
        assert (out / "knn" / "seeds" / seed.name).read_bytes() == seed.read_bytes()
    assert len(list((out / "knn" / "seeds").glob("*.png"))) == 2
    table = format_table(result)
    assert "backbone" in table and "knn" in table and "purity" in table
    assert knn["note"] is None, knn["note"]
    assert 0 < knn["miou"] <= 100 and knn["edges"] < backbone["edges"]


def test_cli_resumes_and_prints_json_last(bench, sample_root, capsys):
    out, first = bench
    code = main(["bench-graphs", "--data", str(sample_root), "--out", str(out), "--builders",
                 "backbone", *TINY, "--in-process", "--skip-radius-loop"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary["builders"]) == {"backbone"}
    row = summary["builders"]["backbone"]
    assert row["miou"] == pytest.approx(first["builders"][0]["miou"])  # resumed, same labels
    assert row["nodes"] == 1080 and row["purity"] == pytest.approx(first["builders"][0]["purity"])
    assert summary["radius_vs_loop_speedup"] is None
    assert any(line.startswith("builder") for line in lines)


def test_unknown_builder_is_an_error(tmp_path, sample_root, capsys):
    code = main(["bench-graphs", "--data", str(sample_root), "--out", str(tmp_path),
                 "--builders", "backbone", "grid9", "limit=1"])
    assert code == 2
    assert "unknown graph builder(s) ['grid9']" in capsys.readouterr().err


@pytest.mark.parametrize("shape", ["disc", "square"])
def test_loop_reference_equals_the_radius_builder(shape):
    features = torch.rand(16, 7, 6, generator=torch.Generator().manual_seed(0)) * 8
    graph = RadiusGraphBuilder(radius=2, threshold=0.05, shape=shape).build(
        torch.rand(3, 56, 48), features)
    vectorised = (graph.edge_index, graph.edge_attr)
    for backend in ("torch", "numpy"):
        reference = radius_graph_loop_reference(features, 2, shape, 0.05, backend)
        assert same_edges(vectorised, reference, 42)
    # ... and the check notices a missing edge or a changed weight.
    edge_index, edge_weight = reference
    assert not same_edges(vectorised, (edge_index[:, 1:], edge_weight[1:]), 42)
    assert not same_edges(vectorised, (edge_index, edge_weight * 0.9), 42)


def test_radius_vs_loop_reports_speedup_and_equality():
    result = radius_vs_loop(height=9, width=7, channels=16, repeats=1)
    assert result["edges_equal"] and result["nodes"] == 63
    assert result["speedup"] > 0 and result["speedup_numpy"] > 0
    assert set(result["loop_s"]) == {"torch", "numpy"}
    summary = headline({"builders": [], "radius_vs_loop": result})
    assert summary["radius_vs_loop_speedup"] == result["speedup"]

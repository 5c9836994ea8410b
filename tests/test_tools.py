"""tools/bench.py and tools/soak.py still run end to end (tiny settings, a real server on loopback).
Their numbers are not judged here: speed is a benchmark, never a timed assert."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run_tool(script: str, *args: str) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / script), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bench_reports_every_measure_and_checks_the_concurrent_answers(tmp_path) -> None:
    out = tmp_path / "bench.json"
    run_tool("bench.py", "--input-size", "112", "--roi", "90x70", "--fit-images", "3", "--infers", "3",
             "--clients", "2", "--repeats", "1", "--coreset-n", "2000", "--rss-rois", "2", "--append-images", "2",
             "--search-rows", "100,300", "--record-infers", "2", "--shadow-infers", "2",
             "--infer-batch-size", "2", "--precision", "bf16", "--dataset-samples", "4", "--json", str(out))
    results = json.loads(out.read_text())
    assert results["fit"]["token_shape"] == [8, 8]
    assert results["concurrent"]["score_mismatches"] == 0
    forwards = results["concurrent"]["forwards_by_batch_size"]
    assert sum(int(size) * count for size, count in forwards.items()) == 1 + 3 + results["concurrent"]["requests"]
    assert results["coreset"]["same_seed_same_coreset"] is True
    assert results["precision"]["precision"] == "bf16" and results["precision"]["images"] == 3
    assert results["append"]["append"]["parent_version"] == 1 and results["append"]["append"]["images"] == 2
    assert results["refit"]["n_embeddings"] == 5 * 64
    assert [row["rows"] for row in results["search"]] == [100, 300]
    assert set(results["ratios"]) == {"infer_p50_over_forward", "fit_over_n_forwards", "concurrent_rps_times_forward",
                                      "append_over_n_forwards", "refit_over_n_forwards",
                                      "append_per_image_over_refit_per_image",
                                      "calibrate_dataset_over_n_forwards", "calibrate_dataset_per_sample_over_infer_p50",
                                      "infer_p50_recording_over_off", "infer_p50_shadow_over_plain",
                                      "replay_images_per_s_times_forward", "infer_p50_during_replay_over_idle"}
    assert results["replay"]["images"] > 0  # the replay job scored recorded images while /infer was measured
    assert results["calibrate_dataset"]["samples"] == 4 and results["calibrate_dataset"]["samples_in_120_s"] > 0
    recording = results["recording"]
    assert recording["n"] == 2 and recording["records_written_off"] == 0
    assert recording["records_written"] > 0  # the writer is asynchronous: the last few may still be queued
    assert results["shadow"]["shadow_scored"] > 0  # the twin with a shadow version had its inspections scored twice
    assert all(value > 0 for value in results["ratios"].values())


def test_soak_runs_the_mix_without_errors(tmp_path) -> None:
    out = tmp_path / "soak.json"
    run_tool("soak.py", "--clients", "2", "--seconds", "8", "--warmup", "2", "--input-size", "112",
             "--json", str(out))
    results = json.loads(out.read_text())
    assert results["errors"] == 0 and results["requests"] > 0
    assert results["operations"]["infer"]["n"] > 0

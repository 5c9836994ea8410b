"""``bdi inspections list|export|show`` and ``bdi models drift`` over records inserted straight into the
registry (controlled times and scores), as the records writer would have written them."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import text

from service.settings import Settings
from service.storage import RecordStore, open_storage
from tests.cli.support import PLAIN, as_json, bdi, cli_env, make_service, uploads
from tests.support import both_registries, make_record

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def models_dir(tmp_path, extractor_112, database_url):
    """PLAIN fitted (one tiny image), uncalibrated, on the test's registry; lighter than the CLI tests' fitted
    template."""
    root = tmp_path / "models"
    service = make_service(root, extractor_112)
    service.fit(*PLAIN, 0.2, uploads(0))
    service.close()
    return root


def _records(models_dir) -> RecordStore:
    """The records of the test's registry (SQLite in the models dir, or the PostgreSQL database)."""
    _, registry = open_storage(Settings.load(cli_env(models_dir)))
    registry.upgrade()
    return RecordStore(registry.engine, models_dir)


@both_registries
def test_list_show_and_their_filters(models_dir):
    store = _records(models_dir)
    rows = [make_record(NOW - dt.timedelta(minutes=i), role_id="A" if i % 2 else "B", part_id=f"P{i}",
                        decision="ng" if i % 3 == 0 else "ok") for i in range(9)]
    kept = store.keep_files(rows[0], b"\x89PNG image", b"\x89PNG heatmap")
    store.insert([kept, *rows[1:]])

    listed = as_json(bdi(models_dir, "inspections", "list", "--json"))
    assert [item["id"] for item in listed] == [row.id for row in rows]  # newest first
    assert [item["id"] for item in as_json(bdi(models_dir, "inspections", "list", "--json", "--role", "A",
                                               "--decision", "ng"))] == [rows[3].id]
    since = as_json(bdi(models_dir, "inspections", "list", "--json", "--since", "150s", "--limit", "2"))
    assert [item["id"] for item in since] == [rows[0].id, rows[1].id]
    table = bdi(models_dir, "inspections", "list", "--part", "P4")
    assert table.exit_code == 0 and rows[4].id in table.stdout and rows[5].id not in table.stdout

    shown = as_json(bdi(models_dir, "inspections", "show", rows[0].id, "--json"))
    assert shown["image_kept"] is True and shown["part_id"] == "P0"
    assert Path(shown["image_file"]).read_bytes() == b"\x89PNG image"
    assert bdi(models_dir, "inspections", "show", rows[0].id).stdout.count(rows[0].id) >= 1
    missing = bdi(models_dir, "inspections", "show", "0" * 32)
    assert missing.exit_code == 1 and "bdi inspections list" in missing.stderr
    bad = bdi(models_dir, "inspections", "list", "--since", "yesterday")
    assert bad.exit_code == 2 and "neither an ISO 8601 time" in bad.stderr


_MANY = """
INSERT INTO inspections (id, created_at, recipe_id, role_id, roi_id, version, memory_sha256, model, score, threshold,
    decision, score_percentile, n_regions, largest_area_mm2, total_area_mm2, image_width, image_height, image_sha256,
    mm_per_px, part_id, source, load_ms, forward_ms, total_ms, seq)
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1)
SELECT printf('%032x', i), strftime('%Y-%m-%d %H:%M:%S', '2026-01-01', '+' || i || ' seconds') || '.000000',
    'default', 'R', 'r', 1, :sha, 'vit', i / 100000.0, 0.6, 'ok', 99, 0, 0.0, 0.0, 64, 48, :sha, 0.2, 'P' || i, 'api',
    1.0, 10.0, 12.0, i + 1 FROM n
"""
# the export as an operator runs it, in a process of its own; its peak RSS (SQLite's C allocations included)
# after exporting the newest 10 000 rows, then after exporting all 100 000: streaming means no growth
_EXPORT = """
import sys
from service.cli import main

def peak_kb():  # VmHWM: this process's own peak (getrusage's maxrss would include the parent's, from before exec)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))

main(["inspections", "export", "-o", sys.argv[1] + ".10k", "--since", "2026-01-02T01:00:00Z"], standalone_mode=False)
before = peak_kb()
main(["inspections", "export", "--format", "csv", "-o", sys.argv[1]], standalone_mode=False)
print("peak KB", before, peak_kb())
"""


def test_export_streams_100000_rows_in_bounded_memory(models_dir, tmp_path):
    """On SQLite (the bulk insert below is its SQL); the export is the same code on PostgreSQL."""
    store = _records(models_dir)
    with store.engine.begin() as connection:  # 100 000 rows straight into SQLite, in one statement
        connection.execute(text(_MANY), {"count": 100_000, "sha": "0" * 64})
        connection.execute(text("UPDATE inspection_sequence SET last_seq = :count"), {"count": 100_000})
    out = tmp_path / "all.csv"
    env = {key: value for key, value in {**os.environ, **cli_env(models_dir)}.items() if value is not None}
    result = subprocess.run([sys.executable, "-c", _EXPORT, str(out)], env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "Wrote 10000 record(s)" in result.stderr and "Wrote 100000 record(s)" in result.stderr
    before_kb, after_kb = map(int, result.stdout.split("peak KB")[1].split())
    assert (after_kb - before_kb) * 1024 < 0.1 * out.stat().st_size, (before_kb, after_kb, out.stat().st_size)
    with open(out, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        first = next(reader)
        count = 1 + sum(1 for _ in reader)
    assert count == 100_000
    assert first["part_id"] == "P99999" and float(first["score"]) == 0.99999 and first["image_kept"] == "False"
    assert first["created_at"] == "2026-01-02T03:46:39.000000Z"

    jsonl = tmp_path / "ng.jsonl"
    store.insert([make_record(NOW, decision="ng", part_id="only")])
    exported = bdi(models_dir, "inspections", "export", "--format", "jsonl", "-o", str(jsonl), "--decision", "ng")
    assert exported.exit_code == 0
    [line] = jsonl.read_text().splitlines()
    assert json.loads(line)["part_id"] == "only"
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.fixture
def calibrated(models_dir, extractor_112):
    """PLAIN calibrated on 200 OK scores around 0.40 (sd 0.02): threshold = their p99."""
    rng = np.random.default_rng(0)
    service = make_service(models_dir, extractor_112)
    values = service.calibrate(*PLAIN, rng.normal(0.40, 0.02, 200).tolist())
    version = service.model_state(*PLAIN).active_version
    service.close()
    return models_dir, values["threshold"], version


def _stream(models_dir, threshold, version, creep: float, seed: int) -> None:
    """Seven days of 30 inspections a day; the scores' centre rises by ``creep`` over the week."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(210):
        when = NOW - dt.timedelta(days=7) + dt.timedelta(hours=0.8 * k)
        score = float(rng.normal(0.40 + creep * k / 210, 0.02))
        rows.append(make_record(when, role_id=PLAIN[0], roi_id=PLAIN[1], version=version, score=score,
                                threshold=threshold, decision="ng" if score >= threshold else "ok"))
    _records(models_dir).insert(rows)


@both_registries
def test_drift_says_stable_for_a_steady_stream(calibrated, tmp_path):
    models_dir, threshold, version = calibrated
    _stream(models_dir, threshold, version, creep=0.0, seed=1)
    result = bdi(models_dir, "models", "drift", *PLAIN, "--json", "--since", "8d", "--plot", str(tmp_path / "d.png"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == "stable" and report["reasons"] == [] and report["notes"] == []
    assert report["calibration"]["ok_scores_stored"] is True and report["calibration"]["n"] == 200
    assert abs(report["median_shift"]) < 0.25 and report["recent"]["n"] == 210
    assert sum(day["n"] for day in report["ng_rate_per_day"]) == 210
    plot = cv2.imread(str(tmp_path / "d.png"))
    assert plot.shape == (450, 1000, 3) and plot.std() > 10  # something was drawn
    assert "Verdict: stable" in bdi(models_dir, "models", "drift", *PLAIN, "--since", "8d").stdout


@both_registries
def test_drift_says_drifting_when_scores_creep_up_and_too_few_without_data(calibrated):
    models_dir, threshold, version = calibrated
    _stream(models_dir, threshold, version, creep=0.05, seed=2)
    result = bdi(models_dir, "models", "drift", *PLAIN, "--json", "--since", "8d")
    assert result.exit_code == 1  # drifting: a script or cron job can alert on it
    report = json.loads(result.stdout)
    assert report["verdict"] == "drifting" and report["median_shift"] > 0.25
    assert any("median of all 210 scores (every decision) moved" in reason for reason in report["reasons"])
    assert report["recent"]["median_all"] > report["recent"]["median"]  # the OK-decided ones hide part of the drift
    days = report["ng_rate_per_day"]
    assert days[-1]["rate"] > days[1]["rate"]
    relaxed = bdi(models_dir, "models", "drift", *PLAIN, "--json", "--since", "8d", "--max-shift", "0.9",
                  "--max-near-increase", "0.9")
    assert json.loads(relaxed.stdout)["verdict"] == "stable"  # the limits are settable
    few = bdi(models_dir, "models", "drift", *PLAIN, "--json", "--since", "1h")
    assert few.exit_code == 0 and json.loads(few.stdout)["verdict"] == "too few inspections"


def test_drift_against_a_calibration_that_stored_no_scores_says_so(calibrated):
    models_dir, threshold, version = calibrated
    [history] = models_dir.rglob("history.jsonl")
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    history.write_text("".join(json.dumps({k: v for k, v in line.items() if k != "ok_scores"}) + "\n"
                               for line in lines))  # as calibrations made before records existed
    _stream(models_dir, threshold, version, creep=0.0, seed=3)
    report = json.loads(bdi(models_dir, "models", "drift", *PLAIN, "--json", "--since", "8d").stdout)
    assert report["calibration"]["ok_scores_stored"] is False and "stored no OK scores" in report["notes"][0]
    assert report["verdict"] == "stable" and report["calibration"]["near_threshold_share"] is None
    table = bdi(models_dir, "models", "drift", *PLAIN, "--since", "8d")
    assert "stored no OK scores" in table.stdout and "OK mean (stored)" in table.stdout


def test_drift_needs_a_calibrated_model(models_dir):
    uncalibrated = bdi(models_dir, "models", "drift", *PLAIN)
    assert uncalibrated.exit_code == 1 and "is not calibrated" in uncalibrated.stderr
    unknown = bdi(models_dir, "models", "drift", "R", "nothing")
    assert unknown.exit_code == 1 and "bdi models list" in unknown.stderr

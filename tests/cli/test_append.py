"""``bdi fit --append`` and what ``bdi models show|history|rollback`` say about the versions it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cli.support import as_json, bdi
from tests.support import png_bytes, relit, synthetic_roi


def ok_folder(root: Path, images) -> Path:
    (root / "ok").mkdir(parents=True)
    for i, image in enumerate(images):
        (root / "ok" / f"ok{i}.png").write_bytes(png_bytes(image))
    return root


def test_append_from_a_dataset_folder_then_show_history_and_rollback(tmp_path, shared_backbone):
    models_dir = tmp_path / "models"
    first = ok_folder(tmp_path / "first", [synthetic_roi(60, 50, seed) for seed in range(3)])
    lit = ok_folder(tmp_path / "lit", [relit(synthetic_roi(60, 50, seed)) for seed in (20, 21)])
    missing = bdi(models_dir, "fit", "R", "r", "--dataset", str(lit), "--append")
    assert missing.exit_code == 1 and "fit first" in missing.stderr
    assert bdi(models_dir, "fit", "R", "r", "--dataset", str(first), "--holdout", "0.34").exit_code == 0
    [manifest] = [json.loads(p.read_text()) for p in models_dir.rglob("version.json")]
    [held_out] = manifest["dataset"]["holdout_files"]
    calibrated = bdi(models_dir, "calibrate", "R", "r", "--dataset", str(first))
    assert calibrated.exit_code == 0 and "Scoring the 1 OK sample(s) not used" in calibrated.stderr
    shutil.copy(first / held_out, lit / "ok" / "was_held_out.png")  # now the memory will have seen it too
    usage = bdi(models_dir, "fit", "R", "r", "--dataset", str(lit), "--append", "--holdout", "0.5")
    assert usage.exit_code == 2 and "--holdout" in usage.stderr

    appended = bdi(models_dir, "fit", "R", "r", "--dataset", str(lit), "--append", "--all")  # the held-out one too
    assert appended.exit_code == 0, appended.output
    assert "Appended to R / r: version 2" in appended.stdout and "append.added_rows" in appended.stdout
    shown = as_json(bdi(models_dir, "models", "show", "R", "r", "--json"))
    assert shown["version"] == 2 and shown["calib_stale"] is True
    assert shown["active"]["source"] == "append" and shown["active"]["parent_version"] == 1
    assert shown["n_embeddings"] == 5 * 64  # 2 fitted + 3 appended
    assert "calib_stale" in bdi(models_dir, "models", "show", "R", "r").stdout
    history = as_json(bdi(models_dir, "models", "history", "R", "r", "--json"))
    assert [(v["version"], v["parent_version"], v["ancestors"]) for v in history["versions"]] == [(2, 1, [1]),
                                                                                                  (1, None, [])]
    assert all(v["covering_radius"] is not None for v in history["versions"])
    table = bdi(models_dir, "models", "history", "R", "r").stdout
    assert "parent" in table and "append" in table
    refused = bdi(models_dir, "calibrate", "R", "r", "--dataset", str(first))  # recognised by content
    assert refused.exit_code == 1 and "All 3 OK samples were used to fit this memory" in refused.stderr
    recalibrated = bdi(models_dir, "calibrate", "R", "r", "--dataset", str(first), "--allow-fitted")
    assert recalibrated.exit_code == 0 and "all 3 OK samples were used to fit this memory" in recalibrated.stderr
    assert as_json(bdi(models_dir, "models", "show", "R", "r", "--json"))["calib_stale"] is False

    rolled = bdi(models_dir, "models", "rollback", "R", "r", "1")
    assert rolled.exit_code == 0, rolled.output
    shown = as_json(bdi(models_dir, "models", "show", "R", "r", "--json"))
    assert shown["version"] == 1 and shown["calib_stale"] is False and shown["n_embeddings"] == 2 * 64

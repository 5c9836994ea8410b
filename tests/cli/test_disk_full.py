"""``bdi fit`` and ``bdi calibrate`` on a full disk print the service's 507 sentence and exit 1, changing nothing."""

from __future__ import annotations

from pathlib import Path

from tests.cli.support import PLAIN, as_json, bdi
from tests.support import FullDisk, png_bytes, synthetic_roi


def test_fit_and_calibrate_on_a_full_disk_say_what_to_free(models_dir, tmp_path, shared_backbone, monkeypatch):
    dataset = tmp_path / "dataset"
    for label, seeds in (("ok", (20, 21)), ("ng", (22,))):
        (dataset / label).mkdir(parents=True)
        for seed in seeds:
            (dataset / label / f"{label}{seed}.png").write_bytes(png_bytes(synthetic_roi(60, 50, seed)))
    before = as_json(bdi(models_dir, "models", "show", *PLAIN, "--json"))

    FullDisk(monkeypatch).allow(0)
    for command, what in (("fit", "the new memory version"), ("calibrate", "the calibration")):
        result = bdi(models_dir, command, *PLAIN, "--dataset", str(dataset))
        assert result.exit_code == 1, result.output
        sentence = " ".join(result.stderr.split())  # click wraps nothing, rich may: compare the words
        assert f"The disk of {Path(models_dir)} is full: {what}" in sentence and "needs " in sentence
        assert "BDI_KEEP_VERSIONS" in sentence and "bdi models delete" in sentence
    assert as_json(bdi(models_dir, "models", "show", *PLAIN, "--json")) == before
    assert as_json(bdi(models_dir, "models", "verify", "--json"))["problems"] == []

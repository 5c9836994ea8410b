"""``bdi models export`` / ``bdi models import``: a model moved to another host as one bundle file scores there
exactly as on its source; damaged, foreign and incompatible bundles are refused with a sentence and write nothing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from litestar.testing import TestClient

from service.core import InspectionService
from service.errors import InsufficientStorage
from service.pipeline import FeatureExtractor, extractor_fingerprint
from service.settings import MODEL_NAME, Settings
from service.storage import claim_mm_per_px, import_bundle, open_storage, read_bundle
from service.web import create_app
from tests.cli.support import ODD, PLAIN, as_json, bdi, cli_env
from tests.support import FullDisk, both_registries, infer, synthetic_roi, temporary_database


@pytest.fixture
def other_host(tmp_path: Path, database_url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """Another host: an empty models dir and a registry of its own (its own PostgreSQL database when the test
    runs on PostgreSQL); (models dir, the environment its `bdi` commands need)."""
    root = tmp_path / "other-host"
    root.mkdir()
    if not database_url:
        yield root, {}
        return
    with temporary_database(os.environ["BDI_TEST_DATABASE_URL"]) as url:
        yield root, {"BDI_DATABASE_URL": url}


@contextlib.contextmanager
def app_over(models_dir: Path, extractor: FeatureExtractor, **env: str) -> Iterator[TestClient[Any]]:
    """The HTTP app of one host (the CLI tests' settings, input 112, the session's backbone)."""
    settings = Settings.load(cli_env(models_dir, **env))
    service = InspectionService(settings, extractor=extractor)
    with TestClient(create_app(settings, service)) as client:
        yield client
    service.close()


def export(models_dir: Path, path: Path, *ids: str) -> Path:
    result = bdi(models_dir, "models", "export", *ids, "-o", str(path))
    assert result.exit_code == 0, result.output
    return path


def model_folders(root: Path) -> list[Path]:
    return [path for path in root.rglob("id.json")]


@both_registries
def test_a_model_moved_to_another_host_scores_exactly_as_on_its_source(models_dir, other_host, tmp_path, extractor_112):
    bundle = export(models_dir, tmp_path / "pilot.bdimodel", *PLAIN)
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        for name, entry in manifest["files"].items():
            data = archive.read(name)
            assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["bytes"])
    assert set(names) == {"manifest.json", "memory.npz", "index.faiss", "calib.json", "history.jsonl"}
    assert manifest["format"] == "bdi-model-bundle" and manifest["format_version"] == 1
    assert (manifest["recipe_id"], manifest["role_id"], manifest["roi_id"], manifest["version"]) == ("default", *PLAIN, 2)
    assert manifest["token_grid"] == [8, 8] and manifest["embed_dim"] == 1152
    assert manifest["extractor"] == extractor_112.fingerprint and manifest["created_at"].endswith("Z")
    assert manifest["source_host"] and manifest["service_version"] and manifest["calibration"]["memory_version"] == 2
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".tmp-")]

    target, env = other_host
    result = as_json(bdi(target, "models", "import", str(bundle), "--json", **env))
    assert (result["outcome"], result["version"], result["active"], result["calibrations"]) == ("imported", 1, True, 1)
    assert bdi(target, "models", "verify", **env).exit_code == 0
    history = as_json(bdi(target, "models", "history", *PLAIN, "--json", **env))
    [version] = history["versions"]
    assert version["source"] == "imported" and version["memory_sha256"] == manifest["files"]["memory.npz"]["sha256"]
    [calibration] = history["calibrations"]
    assert calibration["values"]["threshold"] == manifest["calibration"]["threshold"]
    assert calibration["memory_version"] == 1 and calibration["source"] == "api"
    imported = json.loads(next(target.rglob("version.json")).read_text())["imported"]
    assert imported["bundle"] == "pilot.bdimodel" and imported["source_host"] == manifest["source_host"]
    assert (imported["role_id"], imported["roi_id"], imported["version"]) == (*PLAIN, 2)

    images = [synthetic_roi(60, 50, seed) for seed in (11, 12)] + [synthetic_roi(60, 50, 13, defect=(30, 25, 8))]
    with app_over(models_dir, extractor_112) as source_app, app_over(target, extractor_112, **env) as target_app:
        for image in images:
            on_source, on_target = infer(source_app, *PLAIN, image), infer(target_app, *PLAIN, image)
            assert on_source.status_code == on_target.status_code == 200
            assert on_target.json() == on_source.json()  # score, threshold, decision, heatmap, regions: bit for bit
        recalibrated = source_app.post("/calibrate_ng", json={"role_id": PLAIN[0], "roi_id": PLAIN[1],
                                                               "ok_scores": [0.2, 0.3], "ng_scores": [0.7]})
        assert recalibrated.status_code == 200

    again = bdi(target, "models", "import", str(bundle), **env)
    assert again.exit_code == 0 and "was imported before as version 1" in again.stdout and "nothing changed" in again.stdout
    assert as_json(bdi(target, "models", "history", *PLAIN, "--json", **env)) == history

    # A later export of the same model is another bundle: a new version; the common history is not added twice.
    later = export(models_dir, tmp_path / "pilot-2.bdimodel", *PLAIN)
    assert as_json(bdi(target, "models", "import", str(later), "--json", **env))["version"] == 2
    calibrations = as_json(bdi(target, "models", "history", *PLAIN, "--json", **env))["calibrations"]
    assert [c["values"]["threshold"] for c in calibrations] == [recalibrated.json()["threshold"],
                                                               manifest["calibration"]["threshold"]]
    assert [c["memory_version"] for c in calibrations] == [2, 1]


@both_registries
def test_import_into_other_ids_a_named_recipe_and_without_activating(models_dir, tmp_path):
    bundle = str(export(models_dir, tmp_path / "plain.bdimodel", *PLAIN))
    as_odd = ("--as", "/".join(ODD))

    kept = bdi(models_dir, "models", "import", bundle, *as_odd, "--no-activate")
    assert kept.exit_code == 0 and "as version 2 of Inspection / Zona A/1, not active" in kept.stdout
    assert "not applied" in kept.stdout
    shown = as_json(bdi(models_dir, "models", "show", *ODD, "--json"))
    assert (shown["version"], shown["kept_versions"], shown["threshold"]) == (1, [2, 1], None)

    activated = bdi(models_dir, "models", "import", bundle, *as_odd)
    assert activated.exit_code == 0 and "Activated version 2 of Inspection / Zona A/1" in activated.stdout
    shown = as_json(bdi(models_dir, "models", "show", *ODD, "--json"))
    assert (shown["version"], shown["kept_versions"]) == (2, [2, 1])
    assert shown["threshold"] == pytest.approx(0.3495) and shown["calibration"]["memory_version"] == 2
    assert "nothing changed" in bdi(models_dir, "models", "import", bundle, *as_odd).stdout

    copy = as_json(bdi(models_dir, "models", "import", bundle, "--as", "Copy/roi-2", "--json"))
    assert (copy["role_id"], copy["roi_id"], copy["version"], copy["active"]) == ("Copy", "roi-2", 1, True)

    settings = Settings.load(cli_env(models_dir))
    store, registry = open_storage(settings)
    claim_mm_per_px(store, registry, "line2", 0.25)
    registry.dispose()
    locked = bdi(models_dir, "models", "import", bundle, "--recipe", "line2")
    assert locked.exit_code == 1 and "mm_per_px mismatch for recipe 'line2': expected 0.25, got 0.2" in locked.stderr
    assert as_json(bdi(models_dir, "models", "list", "--recipe", "line2", "--json")) == []

    named = as_json(bdi(models_dir, "models", "import", bundle, "--recipe", "Line3", "--json"))
    assert (named["recipe_id"], named["version"], named["active"]) == ("line3", 1, True)
    [row] = as_json(bdi(models_dir, "models", "list", "--recipe", "line3", "--json"))
    assert (row["role_id"], row["roi_id"], row["threshold"]) == (*PLAIN, pytest.approx(0.3495))
    recipe = json.loads(next((models_dir / "@recipes").glob("line3/recipe.json")).read_text())
    assert recipe["mm_per_px"] == 0.2  # the import locked the new recipe's mm/px, as a fit does
    assert bdi(models_dir, "models", "verify").exit_code == 0


# ---- refusals -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_bundle(fitted_template: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = Path(shutil.copytree(fitted_template, tmp_path_factory.mktemp("source") / "models"))
    return export(root, root.parent / "good.bdimodel", *PLAIN).read_bytes()


def rezip(data: bytes, change: Callable[[str, bytes], tuple[str, bytes] | None], extra: dict[str, bytes] = ()) -> bytes:
    """The bundle's members written again (valid CRCs), each through ``change(name, data)`` (None drops it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            changed = change(name, source.read(name))
            if changed is not None:
                target.writestr(*changed)
        for name, content in dict(extra).items():
            target.writestr(name, content)
    return out.getvalue()


def with_manifest(data: bytes, mutate: Callable[[dict[str, Any]], Any]) -> bytes:
    def change(name: str, content: bytes) -> tuple[str, bytes]:
        if name != "manifest.json":
            return name, content
        manifest = json.loads(content)
        mutate(manifest)
        return name, json.dumps(manifest).encode()

    return rezip(data, change)


def huge_in_directory(data: bytes) -> bytes:
    """index.faiss's sizes in the central directory set to 2 GB, in a file of a few KB."""
    entry = data.rindex(b"PK\x01\x02", 0, data.rindex(b"index.faiss"))
    huge = (2**31 - 1).to_bytes(4, "little")
    return data[: entry + 20] + huge + huge + data[entry + 28:]


def flip_in_place(data: bytes) -> bytes:
    """One byte of memory.npz's data changed inside the archive: its CRC-32 no longer holds."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo("memory.npz")
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 200
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:]


def with_index(data: bytes, index: bytes) -> bytes:
    """The bundle with another index.faiss, its sha256 and size put in the manifest and version manifest, so
    that only the index's content can refuse it."""
    digest = hashlib.sha256(index).hexdigest()

    def change(name: str, content: bytes) -> tuple[str, bytes]:
        if name == "index.faiss":
            return name, index
        if name == "manifest.json":
            manifest = json.loads(content)
            manifest["files"]["index.faiss"] = {"sha256": digest, "bytes": len(index)}
            manifest["version_manifest"]["index_sha256"] = digest
            return name, json.dumps(manifest).encode()
        return name, content

    return rezip(data, change)


def index_claiming(data: bytes, n_bytes: int) -> bytes:
    """A 45-byte index.faiss: the header of a flat L2 index of the bundle's rows and dim whose vectors claim
    ``n_bytes`` (faiss allocates what the file claims before it finds the bytes missing)."""
    version = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))["version_manifest"]
    rows, dim = version["coreset_size"], version["embed_dim"]
    return b"IxF2" + struct.pack("<iqqq?iQ", dim, rows, 1 << 20, 1 << 20, True, 1, n_bytes // 4)


def encrypted(data: bytes) -> bytes:
    """index.faiss flagged as encrypted in the central directory (``zipfile`` raises RuntimeError reading it)."""
    entry = data.rindex(b"PK\x01\x02", 0, data.rindex(b"index.faiss"))
    flags = int.from_bytes(data[entry + 8: entry + 10], "little") | 0x1
    return data[: entry + 8] + flags.to_bytes(2, "little") + data[entry + 10:]


def with_version_numbers(**numbers: Any) -> Callable[[bytes], bytes]:
    return lambda data: with_manifest(data, lambda m: m["version_manifest"].update(numbers))


DAMAGES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (lambda data: data[: len(data) // 2], "not a zip archive, or one cut short"),
    "random bytes": (lambda data: hashlib.sha256(data).digest() * 200, "is not a model bundle"),
    "foreign zip": (lambda data: rezip(data, lambda name, content: None, {"photo.jpg": b"\xff\xd8"}),
                    "a zip archive without manifest.json"),
    "other manifest": (lambda data: with_manifest(data, lambda m: m.update(format="something-else")),
                       "does not say format"),
    "path traversal": (lambda data: rezip(data, lambda name, content: (name, content), {"../evil.sh": b"rm -rf"}),
                       "'../evil.sh', a name no bundle holds"),
    "tampered member": (lambda data: rezip(data, lambda name, content: (
        name, content[:-1] + bytes([content[-1] ^ 1]) if name == "memory.npz" else content)),
        "its memory.npz does not match the sha256 in its manifest"),
    "flipped byte": (flip_in_place, "Bad CRC-32 for file 'memory.npz'"),
    "size lie in the manifest": (lambda data: with_manifest(data, lambda m: m["files"]["memory.npz"].update(bytes=10**15)),
                                 "its manifest says 1000000000000000"),
    "size lie in the zip": (huge_in_directory, "its index.faiss claims 2147483647 bytes, more than the file holds"),
    "newer format": (lambda data: with_manifest(data, lambda m: m.update(format_version=2)),
                     "newer version of this service"),
    "encrypted member": (encrypted, "its index.faiss is encrypted"),
    "index claiming 2**60 bytes": (lambda data: with_index(data, index_claiming(data, 2**60)), "its index.faiss holds 45 bytes"),
    "index of another kind": (lambda data: with_index(data, b"IxFI" + zipfile.ZipFile(io.BytesIO(data)).read(
        "index.faiss")[4:]), "its index.faiss is not a flat L2 index"),  # inner product, same size
    "NaN covering radius": (with_version_numbers(covering_radius=float("nan")), "covering_radius"),
    "negative covering radius": (with_version_numbers(covering_radius=-1.0), "covering_radius"),
    "infinite covering radius": (with_version_numbers(covering_radius=float("inf")), "covering_radius"),
    "zero projection dim": (with_version_numbers(projection_dim=0), "projection_dim"),
    "negative parent version": (with_version_numbers(parent_version=-3), "parent_version"),
    "zero ancestor": (with_version_numbers(ancestors=[0]), "ancestors"),
    "NaN coreset rate": (with_version_numbers(coreset_rate_applied=float("nan")), "coreset_rate_applied"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_or_foreign_file_is_refused_with_a_sentence_and_writes_nothing(damage, good_bundle, tmp_path):
    make, phrase = DAMAGES[damage]
    bad = tmp_path / "bad.bdimodel"
    bad.write_bytes(make(good_bundle))
    target = tmp_path / "models"
    target.mkdir()
    result = bdi(target, "models", "import", str(bad))
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert phrase in message and message.endswith("nothing was changed.") and message.count("\n") == 0, message
    assert list(target.iterdir()) == []  # refused before the models dir was even opened
    assert bdi(target, "models", "verify").exit_code == 0 and model_folders(target) == []


def test_a_small_index_claiming_gigabytes_is_refused_without_allocating_them(good_bundle, tmp_path):
    """A 45-byte index.faiss claiming 1.5 GB made the import allocate 1.5 GB: the peak memory of reading a
    bundle stays within a small multiple of its size, measured in a process of its own."""
    good, bad = tmp_path / "good.bdimodel", tmp_path / "bad.bdimodel"
    good.write_bytes(good_bundle)
    bad.write_bytes(with_index(good_bundle, index_claiming(good_bundle, 1_500_000_000)))
    script = (
        "import resource, sys\n"
        "from service.storage import BundleError, read_bundle\n"
        "read_bundle(sys.argv[1])\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    read_bundle(sys.argv[2])\nexcept BundleError as exc:\n    print(exc)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(good), str(bad)], capture_output=True, text=True,
                         check=False, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    refusal, grown_kib = run.stdout.strip().splitlines()
    assert "damaged model bundle" in refusal and "index.faiss" in refusal, refusal
    assert int(grown_kib) * 1024 < 8 * len(good_bundle) + 32 * 2**20, f"reading it grew the peak by {grown_kib} KiB"


def test_another_input_size_or_other_weights_are_refused_unless_forced(good_bundle, tmp_path, extractor_112):
    bundle = tmp_path / "pilot.bdimodel"
    bundle.write_bytes(good_bundle)
    target = tmp_path / "models"
    target.mkdir()

    bigger = bdi(target, "models", "import", str(bundle), BDI_INPUT_SIZE="224")
    assert bigger.exit_code == 1
    assert "token grid 8×8 (input size 112), this host's is 16×16 (BDI_INPUT_SIZE=224)" in bigger.stderr
    assert "--force imports it anyway" in bigger.stderr and bigger.stderr.strip().endswith("nothing was changed.")

    state, _, _ = FeatureExtractor._load_weights("random", MODEL_NAME)
    state["blocks.0.norm1.weight"] = state["blocks.0.norm1.weight"] + 1e-3  # a fine-tuned backbone, say
    checkpoint = tmp_path / "finetuned.pth"
    torch.save(state, checkpoint)
    other = bdi(target, "models", "import", str(bundle), BDI_WEIGHTS=str(checkpoint))
    assert other.exit_code == 1 and "other backbone weights" in other.stderr and "finetuned.pth" in other.stderr
    assert bdi(target, "models", "verify").exit_code == 0 and model_folders(target) == []

    forced = bdi(target, "models", "import", str(bundle), "--force", BDI_WEIGHTS=str(checkpoint))
    assert forced.exit_code == 0 and "Imported with --force although its memory was built with other" in forced.stdout
    assert as_json(bdi(target, "models", "show", *PLAIN, "--json"))["version"] == 1


def test_export_of_a_damaged_version_writes_no_bundle(models_dir, tmp_path):
    folder = models_dir / "Master1" / "inspection-1" / "versions" / "000002"
    index = folder / "index.faiss"
    index.write_bytes(index.read_bytes()[:-1] + b"\0")
    output = tmp_path / "out" / "pilot.bdimodel"
    output.parent.mkdir()
    output.write_bytes(b"an earlier bundle")
    result = bdi(models_dir, "models", "export", *PLAIN, "-o", str(output))
    assert result.exit_code == 1
    assert "Version 2 of role_id='Master1' roi_id='inspection-1' is damaged: its index.faiss does not match" in result.stderr
    assert [path.name for path in output.parent.iterdir()] == ["pilot.bdimodel"]  # no half bundle, no temp file
    assert output.read_bytes() == b"an earlier bundle"


def test_the_import_fingerprints_the_weights_as_the_extractor_does(extractor_112):
    assert extractor_fingerprint(112, "random") == extractor_112.fingerprint


def test_an_import_that_fails_at_any_write_leaves_the_model_as_it_was(models_dir, tmp_path, extractor_112, monkeypatch):
    """The disk fills up at every step of an import in turn (the version's files, the pointer, the history,
    calib.json): each failure is the 507 sentence and the model stays exactly as it was."""
    bundle = read_bundle(export(models_dir, tmp_path / "plain.bdimodel", *PLAIN))
    store, registry = open_storage(Settings.load(cli_env(models_dir)))
    folder = store.model_dir(*ODD)
    before = (registry.history(*ODD), sorted(path.name for path in folder.rglob("*")))
    disk = FullDisk(monkeypatch)
    start = len(bundle.memory) + len(bundle.index)
    for budget in [0, start // 2, *range(start, start + 8192, 256)]:
        disk.allow(budget)
        try:
            result = import_bundle(store, registry, bundle, extractor_112.fingerprint, role_id=ODD[0], roi_id=ODD[1])
        except InsufficientStorage as exc:
            assert "nothing was changed" in exc.message
            assert (registry.history(*ODD), sorted(path.name for path in folder.rglob("*"))) == before, budget
            assert store.verify_folder(folder) == []
            continue
        break
    else:
        pytest.fail("the import never found enough space")
    assert (result.version, result.calibrations) == (2, 1) and budget > start
    registry.dispose()


@both_registries
def test_a_failed_import_into_a_new_recipe_leaves_no_recipe_lock(models_dir, tmp_path, extractor_112, monkeypatch):
    """The import locks a new recipe's mm/px right before its write; when the write fails the lock goes too, so
    the recipe takes whatever mm/px its first successful request brings."""
    bundle = read_bundle(export(models_dir, tmp_path / "plain.bdimodel", *PLAIN))
    store, registry = open_storage(Settings.load(cli_env(models_dir)))

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the registry refused the rows")

    monkeypatch.setattr(registry, "add_import", refuse)
    with pytest.raises(RuntimeError, match="refused the rows"):
        import_bundle(store, registry, bundle, extractor_112.fingerprint, recipe_id="Line9")
    assert registry.recipe_mm_per_px("line9") is None
    namespace = store.namespace_dir("line9")
    assert namespace is None or "mm_per_px" not in store.read_recipe(namespace)
    monkeypatch.undo()
    claim_mm_per_px(store, registry, "line9", 0.5)  # another mm/px is still free to lock it
    assert registry.recipe_mm_per_px("line9") == 0.5
    registry.dispose()

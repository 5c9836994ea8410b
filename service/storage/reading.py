"""Reading a model folder: its memory, calibrations, legacy imports, recipes, what the whole tree holds
(``scan``, ``describe``) and whether the files agree with their manifests (``verify_folder``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..pipeline import patchcore
from ..validation import DEFAULT_RECIPE
from .files import (
    ACTIVE_FILE,
    CALIB_FILE,
    HISTORY_FILE,
    ID_FILE,
    INDEX_FILE,
    MEMORY_FILE,
    MIGRATED_FILE,
    RECIPE_FILE,
    RECIPES_DIR,
    VERSION_FILE,
    _read_json_lines,
    id_children,
    namespace_ids,
    read_json,
    sha256_file,
)
from .versions import ModelVersions, VersionFiles


@dataclasses.dataclass(frozen=True)
class LoadedMemory:
    embeddings: np.ndarray
    token_grid: tuple[int, int]
    metadata: dict[str, Any]
    index_bytes: bytes | None


@dataclasses.dataclass(frozen=True)
class ModelFolder:
    """What the files of one model say, enough to (re)build its registry rows."""

    role_id: str
    roi_id: str
    path: Path
    active_version: int | None
    versions: list[VersionFiles]
    calibrations: list[dict[str, Any]]
    recipe_id: str = DEFAULT_RECIPE


class ModelReading(ModelVersions):
    """What the files of the model folders under ``root`` say."""

    def load_memory(self, folder: Path, version: int) -> LoadedMemory:
        files = self.version_files(folder, version)
        with np.load(files.memory_path, allow_pickle=False) as data:
            embeddings = np.ascontiguousarray(data["emb"], dtype=np.float32)
            grid = (int(data["token_h"]), int(data["token_w"]))
            metadata = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
        index_path = files.index_path
        index_bytes = index_path.read_bytes() if index_path is not None and index_path.is_file() else None
        return LoadedMemory(embeddings, grid, metadata, index_bytes)

    def calibration_history(self, folder: Path) -> list[dict[str, Any]]:
        entries = _read_json_lines(folder / HISTORY_FILE)
        return [entry for entry in entries if isinstance(entry.get("calibration"), dict)]

    def read_calibration(self, folder: Path) -> dict[str, Any] | None:
        try:
            data = read_json(folder / CALIB_FILE)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def legacy_imports(self, folder: Path) -> list[dict[str, Any]]:
        """What was imported into this model from earlier backends' files (path + sha256): makes
        migration idempotent even after the imported version has been pruned."""
        return _read_json_lines(folder / MIGRATED_FILE)

    def verify_folder(self, folder: Path) -> list[str]:
        """Sentences for whatever in one model folder disagrees: files vs their manifests (sha256,
        embedding dims, token grid), index vs memory, pointer vs versions, canonical copies vs the
        active version."""
        problems = []
        versions = self.versions(folder)
        kept = [files.version for files in versions]
        active = self.active_version(folder)
        if (folder / ACTIVE_FILE).exists() and active is None:
            problems.append(f"{ACTIVE_FILE} can't be read")
        for files in versions:
            problems += [f"version {files.version}: {problem}" for problem in _verify_version(files)]
        if active is not None and active not in kept:
            problems.append(f"{ACTIVE_FILE} points to version {active}, which is not on disk (kept: {kept or 'none'})")
        elif active is not None and not self.canonical_is_current(folder, active):
            problems.append(f"the canonical {MEMORY_FILE}/{INDEX_FILE} are not those of the active version {active}")
        if (folder / CALIB_FILE).exists() and self.read_calibration(folder) is None:
            problems.append(f"{CALIB_FILE} can't be read")
        return problems

    def recipes(self) -> Iterator[tuple[str, Path]]:
        """(recipe_id, folder) of every named recipe on disk."""
        for folder, ids in id_children(self.root / RECIPES_DIR):
            recipe_id = ids.get("recipe_id")
            if isinstance(recipe_id, str) and set(ids) == {"recipe_id"}:
                yield recipe_id, folder

    def read_recipe(self, folder: Path) -> dict[str, Any]:
        """A recipe's recipe.json (``{"recipe_id", "mm_per_px", "created_at_utc", ...}``), empty when absent."""
        try:
            data = read_json(folder / RECIPE_FILE)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def scan(self) -> Iterator[ModelFolder]:
        """Every model folder of the canonical layout, default namespace first, then each recipe's."""
        namespaces = [(DEFAULT_RECIPE, self.root), *self.recipes()] if self.root.is_dir() else []
        for recipe_id, namespace in namespaces:
            for role_dir, role_ids in id_children(namespace):
                if role_ids != namespace_ids(recipe_id, role_id=role_ids.get("role_id")):
                    continue
                for model_dir in sorted(role_dir.iterdir()):
                    if model_dir.is_dir():
                        folder = self.describe(model_dir)
                        if folder is not None and folder.recipe_id == recipe_id:
                            yield folder

    def describe(self, model_dir: Path) -> ModelFolder | None:
        try:
            ids = read_json(model_dir / ID_FILE)
            role_id, roi_id = ids["role_id"], ids["roi_id"]
            recipe_id = ids.get("recipe_id", DEFAULT_RECIPE)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        calibrations = self.calibration_history(model_dir)
        if not calibrations:
            legacy = self.read_calibration(model_dir)
            if legacy is not None:
                calibrations = [{"source": "legacy", "calibration": legacy}]
        return ModelFolder(
            role_id, roi_id, model_dir, self.active_version(model_dir), self.versions(model_dir), calibrations,
            recipe_id,
        )


def _verify_version(files: VersionFiles) -> list[str]:
    """What is wrong with one version folder, checked against its own manifest."""
    manifest = files.manifest
    if not files.memory_path.is_file():
        return [f"{MEMORY_FILE} is missing"]
    problems = []
    if sha256_file(files.memory_path) != manifest.get("memory_sha256"):
        problems.append(f"{MEMORY_FILE} does not match the sha256 in {VERSION_FILE} (changed after it was written)")
    try:
        with np.load(files.memory_path, allow_pickle=False) as data:
            shape = data["emb"].shape
            grid = (int(data["token_h"]), int(data["token_w"]))
    except Exception as exc:  # noqa: BLE001 - a damaged npz raises many kinds of errors
        return [*problems, f"{MEMORY_FILE} can't be read ({type(exc).__name__})"]
    expected = (manifest.get("coreset_size"), manifest.get("embed_dim"))
    if len(shape) != 2 or tuple(shape) != expected:
        problems.append(f"{MEMORY_FILE} holds embeddings of shape {tuple(shape)}, {VERSION_FILE} says {expected}")
    expected_grid = (manifest.get("token_h"), manifest.get("token_w"))
    if grid != expected_grid:
        problems.append(f"{MEMORY_FILE} has token grid {grid}, {VERSION_FILE} says {expected_grid}")
    index_path = files.folder / INDEX_FILE
    if manifest.get("index_sha256") and not index_path.is_file():
        problems.append(f"{INDEX_FILE} is missing")
    elif index_path.is_file():
        if sha256_file(index_path) != manifest.get("index_sha256"):
            problems.append(f"{INDEX_FILE} does not match the sha256 in {VERSION_FILE}")
        problems += index_problems(index_path.read_bytes(), shape)
    return problems


def index_problems(data: bytes, memory_shape: tuple[int, ...]) -> list[str]:
    """The faiss index must hold exactly as many vectors, of the same dim, as the memory. Read from its
    length and header alone, never deserialised: faiss trusts the file's length fields, so a few bytes on
    disk could make ``bdi models verify`` allocate gigabytes."""
    if len(memory_shape) != 2:
        return []
    rows, dim = memory_shape
    problem = patchcore.flat_index_problem(data, rows, dim)
    if problem is None:
        return []
    if len(data) >= patchcore.FLAT_INDEX_HEADER.size:
        _, held_dim, held_rows, *_ = patchcore.FLAT_INDEX_HEADER.unpack_from(data)
        if patchcore.flat_index_problem(data, held_rows, held_dim) is None:  # a whole flat index, of other vectors
            return [f"{INDEX_FILE} holds {held_rows} vectors of dim {held_dim}, {MEMORY_FILE} holds {rows} of dim {dim}"]
    return [problem.removeprefix("its ")]
    try:
        index = patchcore.faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError:
        return [f"{INDEX_FILE} can't be read by faiss"]
    if len(memory_shape) == 2 and (index.ntotal, index.d) != tuple(memory_shape):
        rows, dim = memory_shape
        return [f"{INDEX_FILE} holds {index.ntotal} vectors of dim {index.d}, {MEMORY_FILE} holds {rows} of dim {dim}"]
    return []

"""Models that earlier backends wrote (DESIGN.md, "Artifacts"), found and imported into the canonical
layout and the registry without loss: by ``bdi models migrate`` and at every start-up.

Layouts (``san(x)``: each char not alnum/``-``/``_`` -> ``_``; ``b64(x)``: urlsafe base64 of UTF-8, no ``=``):

- ``folder``: ``<role>/<roi>/{memory.npz,index.faiss,calib.json}`` without id.json, raw or sanitised
  ids. A raw id with ``/`` nested the folders deeper: the first folder is taken as the role.
- ``flat``: ``<san(role)>_<san(roi)>.npz`` + ``_index.faiss`` + ``_calib.json``. Sanitising lost
  information: the name is split at the first ``_`` and the report says so.
- ``flat-b64``: ``<b64(role)>__<b64(roi)>.npz`` + ...
- ``recipe`` (the newer GUI's backend): ``recipes/<recipe>/<model_key>/<b64(role)>__<b64(roi)>.npz`` + ...,
  imported into that recipe (the model key is no part of a model's identity: it stays in the recorded
  legacy path). Its ``_calib.json`` may carry only the threshold and a few more keys: the contract's
  calib.json keys are filled in (unknown statistics null, mm_per_px from the recipe's meta).
- ``recipe-meta``: ``recipes/<recipe>/recipe_meta.json`` (``{"mm_per_px", "created_at_utc"}``): the
  recipe's mm_per_px lock, taken when the recipe has none yet.
- ``recipe-dataset``: ``recipes/<recipe>/datasets/<b64(role)>__<b64(roi)>/{ok,ng}/<stamp><ext>`` with
  ``.json`` sidecars: copied into the recipe's dataset store under new stored names (the sidecar keeps
  the old name as ``client_filename`` and the path as ``legacy_path``); a file that is not an image, or
  whose sidecar is unusable, is skipped and reported. Each sample is journaled (path + sha256) in the
  store's ``imported.jsonl``, so a sample deleted afterwards is not brought back.

``_`` is in the urlsafe alphabet, so a ``__`` is taken as the base64 split only when both halves
decode to valid ids and re-encode to exactly the same text; otherwise the name is a sanitised one.
``--map OLD=ROLE/ROI`` (``mapping``) overrides the ids of any legacy name.

Two candidates for one model: the newest (calib ``created_at_utc``, else file mtime) is imported,
the other is reported and left on disk. Canonical data newer than a legacy file is never replaced.
Each import is recorded (legacy path + sha256) in the model's ``migrated.jsonl``, so a second run
changes nothing even after the imported version has been pruned. A ``folder`` model whose ids are
plain names already sits at its canonical path: it is adopted in place (id.json added, files
versioned), so the spec's ``models/<role>/<roi>/memory.npz`` stays the active memory.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadRequest
from ..pipeline.patchcore import MemoryIndex
from ..validation import DEFAULT_RECIPE, normalize_recipe, validate_id
from .artifacts import ModelStore
from .datasets import LABELS, SAMPLE_SUFFIXES, SIDECAR_SUFFIX, DatasetStore, NewSample, prepare_sample
from .files import (
    ACTIVE_FILE,
    CALIB_FILE,
    HISTORY_FILE,
    ID_FILE,
    INDEX_FILE,
    MEMORY_FILE,
    RESERVED_DIRS,
    is_plain_name,
    read_json,
    sha256_file,
    utc_now,
)
from .locks import LEGACY_IMPORT
from .recipes import claim_mm_per_px
from .registry import Registry
from .registry.database import CALIBRATION_KEYS

FOLDER, FLAT, FLAT_B64, RECIPE = "folder", "flat", "flat-b64", "recipe"
RECIPE_META, RECIPE_DATASET = "recipe-meta", "recipe-dataset"
MODEL_LAYOUTS = (FOLDER, FLAT, FLAT_B64, RECIPE)
RECIPES_DIR = "recipes"
RECIPE_META_FILE = "recipe_meta.json"
RECIPE_DATASETS_DIR = "datasets"
MAX_IMAGE_PIXELS = 100_000_000  # the setting's default: a legacy sample larger than that is skipped
UNKNOWN_EXTRACTOR = {"model": "unknown"}

IMPORTED, ADOPTED, ALREADY_MIGRATED, SUPERSEDED, SKIPPED, FAILED = (
    "imported", "adopted", "already migrated", "superseded", "skipped", "failed",
)
WOULD = {IMPORTED: "would import", ADOPTED: "would adopt"}


class LegacyError(Exception):
    """A legacy file can't be imported, or a mapping names no legacy model; one sentence."""


@dataclasses.dataclass(frozen=True)
class LegacyModel:
    """One model in an earlier backend's layout."""

    name: str  # path relative to the models dir (folder, or files without suffix): what --map matches
    layout: str
    role_id: str | None
    roi_id: str | None
    memory: Path | None
    index: Path | None
    calib: Path | None
    note: str | None = None  # why the ids may differ from the originals
    recipe_id: str | None = DEFAULT_RECIPE  # None: the recipe folder's name is no valid recipe id
    path: Path | None = None  # recipe-meta: the file; recipe-dataset: the folder

    @property
    def files(self) -> list[Path]:
        return [path for path in (self.memory, self.index, self.calib) if path is not None]


@dataclasses.dataclass
class MigrationAction:
    """What happened (or would happen, in a dry run) to one legacy model."""

    legacy: LegacyModel
    outcome: str
    detail: str = ""
    version: int | None = None

    def describe(self) -> str:
        legacy = self.legacy
        ids = [f"recipe_id={legacy.recipe_id!r}"] if legacy.recipe_id != DEFAULT_RECIPE else []
        if legacy.layout != RECIPE_META:
            ids += [f"role_id={legacy.role_id!r}", f"roi_id={legacy.roi_id!r}"]
        head = f"{self.outcome} as {' '.join(ids)}" if ids else self.outcome
        return "; ".join(part for part in (head, self.detail, legacy.note) if part)


# ---- discovery ---------------------------------------------------------------------------------
def find_legacy(store: ModelStore) -> list[LegacyModel]:
    """Every legacy model under the store's root, in every layout, sorted by name."""
    root = store.root
    if not root.is_dir():
        return []
    found = _folder_models(store) + _flat_models(store, root, FLAT)
    recipes = root / RECIPES_DIR
    if recipes.is_dir() and not (recipes / ID_FILE).exists():  # else a canonical role named "recipes"
        for recipe_dir in sorted(recipes.iterdir()):
            if recipe_dir.is_dir() and not recipe_dir.name.startswith("."):
                found += _recipe_models(store, recipe_dir)
    return sorted(found, key=lambda model: model.name)


def _recipe_models(store: ModelStore, recipe_dir: Path) -> list[LegacyModel]:
    """What the newer backend kept of one recipe: models per model key, its meta and its datasets."""
    try:
        recipe_id: str | None = normalize_recipe(recipe_dir.name)
    except BadRequest:
        recipe_id = None
    note = None if recipe_id is not None else f"{recipe_dir.name!r} is no valid recipe id"
    found = []
    meta = recipe_dir / RECIPE_META_FILE
    if meta.is_file():
        found.append(LegacyModel(store.relative(meta), RECIPE_META, None, None, None, None, None, note, recipe_id, meta))
    for entry in sorted(recipe_dir.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if entry.name != RECIPE_DATASETS_DIR:
            found += [dataclasses.replace(model, recipe_id=recipe_id, note=model.note or note)
                      for model in _flat_models(store, entry, RECIPE)]
            continue
        for dataset in sorted(entry.iterdir()):
            if dataset.is_dir() and not dataset.name.startswith("."):
                role_id, roi_id, _, stem_note = _parse_stem(dataset.name)
                found.append(LegacyModel(store.relative(dataset), RECIPE_DATASET, role_id, roi_id, None, None, None,
                                         stem_note or note, recipe_id, dataset))
    return found


def _folder_models(store: ModelStore) -> list[LegacyModel]:
    root = store.root
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # @recipes and @datasets hold this service's own named-recipe models and samples, never legacy files
        skip = RESERVED_DIRS if here == root else ()
        dirnames[:] = sorted(name for name in dirnames if not name.startswith(".") and name not in skip)
        names = set(filenames)
        files = {name: here / name if name in names else None for name in (MEMORY_FILE, INDEX_FILE, CALIB_FILE)}
        ids = _model_ids(here) if ID_FILE in names else None
        if ids is not None:
            dirnames[:] = []  # a canonical model: the memories under versions/ are not legacy
            # Legacy files in a model folder that are not versioned yet (a claimed folder whose import
            # was interrupted, or files copied in by hand).
            if MEMORY_FILE in names and ACTIVE_FILE not in names:
                calib = files[CALIB_FILE] if HISTORY_FILE not in names else None
                found.append(
                    LegacyModel(store.relative(here), FOLDER, *ids, files[MEMORY_FILE], files[INDEX_FILE], calib)
                )
            continue
        parts = here.relative_to(root).parts
        if len(parts) < 2 or (files[MEMORY_FILE] is None and files[CALIB_FILE] is None):
            continue
        role_id, roi_id = parts[0], "/".join(parts[1:])
        notes = []
        if len(parts) > 2:
            notes.append(f"nested folders: taken as role {role_id!r}, roi {roi_id!r}")
        if "_" in role_id + roi_id:
            notes.append("ids are the folder names, which an earlier backend may have sanitised")
        note = "; ".join(notes) + "; --map to correct" if notes else None
        found.append(LegacyModel(store.relative(here), FOLDER, role_id, roi_id, *files.values(), note))
    return found


def _model_ids(folder: Path) -> tuple[str, str] | None:
    try:
        ids = read_json(folder / ID_FILE)
        return str(ids["role_id"]), str(ids["roi_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _flat_models(store: ModelStore, directory: Path, layout: str) -> list[LegacyModel]:
    """Models stored as ``<stem>.npz`` + ``<stem>_index.faiss`` + ``<stem>_calib.json`` in one folder."""
    groups: dict[str, dict[str, Path]] = {}
    for entry in sorted(directory.iterdir()):
        name = entry.name
        if not entry.is_file() or name.startswith("."):
            continue
        if name.endswith("_index.faiss"):
            groups.setdefault(name[: -len("_index.faiss")], {})["index"] = entry
        elif name.endswith("_calib.json"):
            groups.setdefault(name[: -len("_calib.json")], {})["calib"] = entry
        elif name.endswith(".npz") and name != MEMORY_FILE:
            groups.setdefault(name[: -len(".npz")], {})["memory"] = entry
    models = []
    for stem, files in groups.items():
        role_id, roi_id, is_b64, note = _parse_stem(stem)
        kind = RECIPE if layout == RECIPE else (FLAT_B64 if is_b64 else FLAT)
        models.append(LegacyModel(
            store.relative(directory / stem), kind, role_id, roi_id,
            files.get("memory"), files.get("index"), files.get("calib"), note,
        ))
    return models


def _parse_stem(stem: str) -> tuple[str | None, str | None, bool, str | None]:
    """(role, roi, is base64, note) of a flat file name without its suffix.

    At most one ``__`` can be the base64 split: the base64 of UTF-8 never holds ``__`` itself (that
    takes 12 one-bits in a row) nor starts with ``_`` (a first byte >= 0xFC), so in a run of
    underscores only the split that leaves the run's extra ``_`` on the left decodes.
    """
    start = stem.find("__")
    while start != -1:
        role_id, roi_id = _b64_id(stem[:start]), _b64_id(stem[start + 2 :])
        if role_id is not None and roi_id is not None:
            return role_id, roi_id, True, None
        start = stem.find("__", start + 1)
    if "_" in stem:
        role_id, roi_id = stem.split("_", 1)
        return role_id, roi_id, False, "sanitised name (lossy), split at the first '_'; --map to correct"
    return None, None, False, "no '_' in the name, so role and roi can't be told apart; use --map"


def _b64_id(text: str) -> str | None:
    """The id whose urlsafe base64 (no ``=``) is exactly ``text``, or None."""
    if not text:
        return None
    try:
        value = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii").rstrip("=") != text:
        return None
    return value if _valid_id(value) else None


def _valid_id(value: str | None) -> bool:
    try:
        validate_id("id", value)  # type: ignore[arg-type]
    except BadRequest:
        return False
    return True


# ---- import ------------------------------------------------------------------------------------
def migrate(
    store: ModelStore, registry: Registry, *, dry_run: bool = False, remove_legacy: bool = False,
    mapping: Mapping[str, tuple[str, str]] | None = None, max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> list[MigrationAction]:
    """Import every legacy model (and recipe meta and dataset) under the store's root; one action each.

    ``mapping``: legacy name (as reported; a file's bare stem also works) -> (role_id, roi_id).
    ``remove_legacy``: delete a legacy model's files once everything in them is in the canonical layout.
    """
    mapping = dict(mapping or {})
    if not find_legacy(store):
        if mapping:
            raise LegacyError(f"--map {next(iter(mapping))} names no legacy model: none was found under {store.root}.")
        return []
    lock = contextlib.nullcontext() if dry_run else store.locks.named(LEGACY_IMPORT)
    with lock:  # several workers start at once; the first imports, the others find it done
        found = find_legacy(store)
        candidates = [_mapped(model, mapping) for model in found if model.layout in MODEL_LAYOUTS]
        unused = sorted(set(mapping) - {key for model in candidates for key in _map_keys(model)})
        if unused:
            names = ", ".join(model.name for model in candidates)
            raise LegacyError(f"--map {unused[0]} names no legacy model; the legacy names are: {names}.")
        # The recipes' meta first: a recipe's lock is its old value, not that of a sample imported before it.
        actions = [_migrate_recipe_meta(store, registry, model, dry_run) for model in found if model.layout == RECIPE_META]
        groups: dict[tuple[str, str, str], list[tuple[float, LegacyModel, dict[str, Any] | None]]] = {}
        for model in candidates:
            if model.recipe_id is None:
                actions.append(MigrationAction(model, SKIPPED, "its recipe folder's name is no valid recipe id"))
            elif not (_valid_id(model.role_id) and _valid_id(model.roi_id)):
                actions.append(MigrationAction(model, SKIPPED, "its name gives no valid role and roi ids"))
            elif model.memory is None and model.calib is None:
                actions.append(MigrationAction(model, SKIPPED, "an index without its memory; nothing to import"))
            else:
                try:
                    calib = _read_calib(model.calib) if model.calib is not None else None
                    if calib is not None and model.layout == RECIPE:
                        calib = _fill_calib(calib, _recipe_mm_per_px(model))
                except LegacyError as exc:
                    actions.append(MigrationAction(model, FAILED, str(exc)))
                    continue
                key = (model.recipe_id, model.role_id, model.roi_id)
                groups.setdefault(key, []).append((_created(model, calib), model, calib))
        for entries in groups.values():
            entries.sort(key=lambda entry: entry[0], reverse=True)
            (_, winner, calib), *older = entries
            actions.append(_migrate_one(store, registry, winner, calib, dry_run, remove_legacy))
            for _, model, _ in older:
                detail = f"{winner.name} is newer; left on disk, not imported"
                actions.append(MigrationAction(model, SUPERSEDED, detail))
        for model in found:
            if model.layout == RECIPE_DATASET:
                actions.append(_migrate_dataset(store, model, dry_run, remove_legacy, max_image_pixels))
        return sorted(actions, key=lambda action: action.legacy.name)


def _map_keys(model: LegacyModel) -> set[str]:
    """Names --map may use: the full legacy name, and for files also their bare stem."""
    return {model.name} if model.layout == FOLDER else {model.name, model.name.rsplit("/", 1)[-1]}


def _recipe_mm_per_px(model: LegacyModel) -> float | None:
    """The mm_per_px in the recipe_meta.json next to a recipe-layout model, if any."""
    if model.layout != RECIPE or model.memory is None and model.calib is None:
        return None
    path = next(path for path in (model.memory, model.calib) if path is not None)
    try:
        value = read_json(path.parents[1] / RECIPE_META_FILE).get("mm_per_px")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if _positive_number(value) else None


def _positive_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _migrate_recipe_meta(store: ModelStore, registry: Registry, model: LegacyModel, dry_run: bool) -> MigrationAction:
    """A recipe's old mm_per_px becomes its lock, unless it has one already (then that one stays)."""
    assert model.path is not None
    if model.recipe_id is None:
        return MigrationAction(model, SKIPPED, "its recipe folder's name is no valid recipe id")
    if model.recipe_id == DEFAULT_RECIPE:
        return MigrationAction(model, SKIPPED, "the default namespace locks no mm_per_px")
    try:
        value = read_json(model.path).get("mm_per_px")
    except (OSError, ValueError, AttributeError):
        return MigrationAction(model, FAILED, f"{model.path.name} is not a readable JSON object")
    if not _positive_number(value):
        return MigrationAction(model, SKIPPED, f"its mm_per_px {value!r} is no number > 0")
    locked = registry.recipe_mm_per_px(model.recipe_id)
    if locked is not None:
        same = abs(locked - value) <= 1e-6 * abs(locked)
        return MigrationAction(model, ALREADY_MIGRATED if same else SKIPPED,
                               "" if same else f"the recipe already locks mm_per_px {locked}; {value} not taken")
    if dry_run:
        return MigrationAction(model, WOULD[IMPORTED], f"mm_per_px {value} locked")
    claim_mm_per_px(store, registry, model.recipe_id, float(value))
    return MigrationAction(model, IMPORTED, f"mm_per_px {value} locked")


def _migrate_dataset(
    store: ModelStore, model: LegacyModel, dry_run: bool, remove_legacy: bool, max_pixels: int
) -> MigrationAction:
    """Copy a recipe dataset's samples the journal does not list into the dataset store."""
    assert model.path is not None
    if model.recipe_id is None:
        return MigrationAction(model, SKIPPED, "its recipe folder's name is no valid recipe id")
    if not (_valid_id(model.role_id) and _valid_id(model.roi_id)):
        return MigrationAction(model, SKIPPED, "its name gives no valid role and roi ids")
    recipe_id, role_id, roi_id = model.recipe_id, str(model.role_id), str(model.roi_id)
    datasets = DatasetStore(store)
    target = datasets.folder(recipe_id, role_id, roi_id)
    done = datasets.imported(target)
    hashed = [(label, path, sha256_file(path)) for label, path in _legacy_samples(model.path)]
    todo = [(label, path, sha) for label, path, sha in hashed if (store.relative(path), sha) not in done]
    removed = remove_legacy and not dry_run and not todo and remove_files(
        store.root, _with_sidecars([path for _, path, _ in hashed])
    )
    if not todo:
        return MigrationAction(model, ALREADY_MIGRATED, "legacy files removed" if removed else "")
    if dry_run:
        counts = {label: sum(item[0] == label for item in todo) for label in LABELS}
        return MigrationAction(model, WOULD[IMPORTED], f"{counts['ok']} OK and {counts['ng']} NG sample(s)")
    target = datasets.folder(recipe_id, role_id, roi_id, create=True)
    assert target is not None
    skipped = []
    counts = dict.fromkeys(LABELS, 0)
    for label, path, sha in todo:
        relative = store.relative(path)
        entry: dict[str, Any] = {"legacy_path": relative, "sha256": sha, "label": label, "imported_at": utc_now()}
        try:
            sample = _legacy_sample(path, max_pixels)
        except BadRequest as exc:
            skipped.append(f"{path.name}: {exc.message}")
            entry["skipped"] = exc.message
        else:
            created = sample.meta.get("created_at_utc")
            extra = {"legacy_path": relative,
                     "created_at_utc": created if isinstance(created, str) else _iso(path.stat().st_mtime)}
            entry["stored"] = datasets.add(recipe_id, role_id, roi_id, label, [sample], [extra])[0]
            counts[label] += 1
        datasets.record_import(target, entry)
    detail = f"{counts['ok']} OK and {counts['ng']} NG sample(s)"
    if skipped:
        detail += f"; {len(skipped)} skipped ({'; '.join(skipped[:3])}{'; ...' if len(skipped) > 3 else ''})"
    if remove_legacy and remove_files(store.root, _with_sidecars([path for _, path, _ in hashed])):
        detail += "; legacy files removed"
    return MigrationAction(model, IMPORTED, detail)


def _legacy_samples(folder: Path) -> list[tuple[str, Path]]:
    """(label, image) of a legacy dataset folder, oldest name first."""
    return [(label, path) for label in LABELS if (folder / label).is_dir()
            for path in sorted((folder / label).iterdir())
            if path.is_file() and path.suffix.lower() in SAMPLE_SUFFIXES]


def _with_sidecars(paths: list[Path]) -> list[Path]:
    return paths + [path.with_suffix(SIDECAR_SUFFIX) for path in paths]


def _legacy_sample(path: Path, max_pixels: int) -> NewSample:
    """A legacy sample, checked like an upload; a null mm_per_px (the old backend stored one) is dropped."""
    sidecar_path = path.with_suffix(SIDECAR_SUFFIX)
    try:
        sidecar = read_json(sidecar_path) if sidecar_path.is_file() else {}
    except (OSError, ValueError):
        raise BadRequest(f"its sidecar {sidecar_path.name} is not readable JSON") from None
    if not isinstance(sidecar, dict):
        raise BadRequest(f"its sidecar {sidecar_path.name} is not a JSON object")
    meta = {key: value for key, value in sidecar.items() if not (key == "mm_per_px" and value is None)}
    meta.setdefault("filename", path.name)
    return prepare_sample(path.name, path.read_bytes(), meta, max_pixels, path.name)


def _mapped(model: LegacyModel, mapping: Mapping[str, tuple[str, str]]) -> LegacyModel:
    key = next((key for key in _map_keys(model) if key in mapping), None)
    if key is None:
        return model
    role_id, roi_id = mapping[key]
    return dataclasses.replace(model, role_id=role_id, roi_id=roi_id, note=f"ids from --map {key}")


def _migrate_one(
    store: ModelStore, registry: Registry, model: LegacyModel, calib: dict[str, Any] | None,
    dry_run: bool, remove_legacy: bool,
) -> MigrationAction:
    role_id, roi_id, recipe_id = str(model.role_id), str(model.roi_id), str(model.recipe_id)
    folder = store.model_dir(role_id, roi_id, recipe_id=recipe_id)
    memory_sha = sha256_file(model.memory) if model.memory is not None else None
    calib_sha = sha256_file(model.calib) if model.calib is not None else None
    done = [entry for entry in store.legacy_imports(folder) if entry.get("legacy_path") == model.name] if folder else []
    take_memory = memory_sha is not None and memory_sha not in {entry.get("memory_sha256") for entry in done}
    take_calib = calib_sha is not None and calib_sha not in {entry.get("calib_sha256") for entry in done}
    if not (take_memory or take_calib):
        removed = remove_legacy and not dry_run and remove_files(store.root, model.files)
        return MigrationAction(model, ALREADY_MIGRATED, "legacy files removed" if removed else "")
    newer = []
    if folder is not None:
        latest_version, latest_calibration = _latest_canonical(store, folder)
        if take_memory and latest_version is not None and latest_version > model.memory.stat().st_mtime:
            take_memory = False
            newer.append("memory")
        if take_calib and latest_calibration is not None and latest_calibration > _created(model, calib):
            take_calib = False
            newer.append("calibration")
    kept = f"the canonical {' and '.join(newer)} {'is' if len(newer) == 1 else 'are'} newer; legacy files kept"
    kept = kept if newer else ""
    if not (take_memory or take_calib):
        return MigrationAction(model, SKIPPED, kept)
    try:
        memory = _read_memory(model) if take_memory else None
    except LegacyError as exc:
        return MigrationAction(model, FAILED, str(exc))
    legacy_dir = model.files[0].parent
    plain = is_plain_name(role_id) and is_plain_name(roi_id)
    in_place = model.layout == FOLDER and recipe_id == DEFAULT_RECIPE and legacy_dir == (
        folder or (store.root / role_id / roi_id if plain else None)
    )
    parts = " and ".join(part for part, take in (("memory", take_memory), ("calibration", take_calib)) if take)
    detail = "; ".join(filter(None, [parts, kept]))
    if dry_run:
        return MigrationAction(model, WOULD[ADOPTED if in_place else IMPORTED], detail)
    if recipe_id == DEFAULT_RECIPE:
        store.claim(store.root / role_id, {"role_id": role_id})
    if in_place:
        store.claim(legacy_dir, {"role_id": role_id, "roi_id": roi_id})
    version = None
    with store.writing(role_id, roi_id, recipe_id=recipe_id) as folder:
        in_place = folder == legacy_dir
        if memory is not None:
            embeddings, grid, metadata, index_bytes = memory
            version = store.write_version(
                folder, embeddings, grid, metadata, index_bytes, source="migrated", legacy_path=model.name
            ).version
        if take_calib and calib is not None and model.calib is not None:
            # No uid: the registry derives one from the content, the same it gives a bare calib.json,
            # so a calibration the registry already listed is not listed twice.
            created = calib.get("created_at_utc")
            store.write_calibration(folder, calib, {
                "created_at": created if isinstance(created, str) else _iso(model.calib.stat().st_mtime),
                "source": "legacy",
                "memory_version": store.active_version(folder),
                "correlation_id": str(calib["request_id"]) if calib.get("request_id") is not None else None,
                "client": None,
                "legacy_path": model.name,
            })
        store.record_legacy_import(folder, {
            "legacy_path": model.name,
            "layout": model.layout,
            "files": [] if in_place else [store.relative(path) for path in model.files],
            "memory_sha256": memory_sha if take_memory else None,
            "calib_sha256": calib_sha if take_calib else None,
            "version": version,
            "migrated_at": utc_now(),
        })
        described = store.describe(folder)
        if described is not None:
            registry.sync_folder(store, described)
    if remove_legacy and not in_place and not kept and remove_files(store.root, model.files):
        detail += "; legacy files removed"
    return MigrationAction(model, ADOPTED if in_place else IMPORTED, detail, version)


def _read_calib(path: Path) -> dict[str, Any]:
    """calib.json as it is (extra keys kept); it must at least carry a finite threshold."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise LegacyError(f"{path.name} is not readable JSON ({exc})") from None
    threshold = data.get("threshold") if isinstance(data, dict) else None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise LegacyError(f"{path.name} has no numeric threshold")
    return data


def _fill_calib(calib: dict[str, Any], mm_per_px: float | None) -> dict[str, Any]:
    """The newer backend's /calibrate_dataset wrote only a few keys: the contract's keys first, in their order
    (a statistic it did not keep is null, mm_per_px the recipe's), then the file's own extra keys."""
    filled = {key: calib.get(key) for key in CALIBRATION_KEYS}
    if filled["mm_per_px"] is None:
        filled["mm_per_px"] = mm_per_px
    return {**filled, **{key: value for key, value in calib.items() if key not in filled or value is not None}}


def _read_memory(model: LegacyModel) -> tuple[np.ndarray, tuple[int, int], dict[str, Any], bytes | None]:
    """(embeddings, token grid, metadata for the new version, index bytes) of a legacy memory.

    A memory without ``metadata`` gets the extractor fingerprint ``{"model": "unknown"}``; the index
    is kept when it holds exactly the memory, else rebuilt from it.
    """
    path = model.memory
    assert path is not None
    try:
        with np.load(path, allow_pickle=False) as data:
            embeddings = np.asarray(data["emb"])
            grid = (int(data["token_h"]), int(data["token_w"]))
            legacy = json.loads(str(data["metadata"])) if "metadata" in data.files else None
    except Exception as exc:  # noqa: BLE001 - a damaged npz raises many kinds of errors
        reason = f"{type(exc).__name__}: {str(exc).split('. ')[0].splitlines()[0]}" if str(exc) else type(exc).__name__
        raise LegacyError(f"{path.name} can't be read as a memory bank ({reason})") from None
    if embeddings.ndim != 2 or len(embeddings) == 0 or not np.issubdtype(embeddings.dtype, np.floating):
        raise LegacyError(f"{path.name} holds no (M, D) float embeddings (shape {embeddings.shape})")
    if not np.isfinite(embeddings).all():
        raise LegacyError(f"{path.name} holds NaN or infinite embeddings")
    legacy = legacy if isinstance(legacy, dict) else {}
    extractor = legacy.get("extractor")
    if not isinstance(extractor, dict):
        # The old metadata was flat: coreset numbers plus the extractor's fingerprint.
        extractor = {k: v for k, v in legacy.items() if not k.startswith(("coreset", "n_"))} or UNKNOWN_EXTRACTOR
    metadata = {**legacy, "extractor": extractor, "migrated_from": model.name}
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    index_data = model.index.read_bytes() if model.index is not None else None
    return embeddings, grid, metadata, MemoryIndex.from_bytes(index_data, embeddings).to_bytes()


def _created(model: LegacyModel, calib: dict[str, Any] | None) -> float:
    """When a legacy model was last written: calib ``created_at_utc`` if present, else file mtime."""
    stamp = _timestamp(calib.get("created_at_utc")) if calib is not None else None
    if stamp is not None:
        return stamp
    return max(path.stat().st_mtime for path in (model.memory, model.calib) if path is not None)


def _latest_canonical(store: ModelStore, folder: Path) -> tuple[float | None, float | None]:
    """When the canonical model last got a memory version and a calibration (None: never)."""
    described = store.describe(folder)
    if described is None:
        return None, None
    versions = [_timestamp(files.manifest.get("created_at")) for files in described.versions]
    calibrations = [_timestamp(entry.get("created_at")) for entry in described.calibrations]
    return (max(filter(None, versions), default=None), max(filter(None, calibrations), default=None))


def _timestamp(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp()


def _iso(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def remove_files(root: Path, paths: Iterable[Path]) -> bool:
    """Delete legacy files and the folders they leave empty, up to ``root``; True when any existed."""
    paths = list(paths)
    existed = any(path.exists() for path in paths)
    for path in paths:
        path.unlink(missing_ok=True)
    for parent in {path.parent for path in paths}:
        while parent != root and root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    return existed


def recorded_files(store: ModelStore, folder: Path) -> list[Path]:
    """The legacy files a model was imported from that are still on disk: ``bdi models delete``
    removes them too, else the next start-up would import the deleted model again."""
    names = {name for entry in store.legacy_imports(folder) for name in entry.get("files") or []}
    return sorted(store.root / name for name in names if (store.root / name).exists())

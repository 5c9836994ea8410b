"""The dataset store: OK/NG samples the newer GUI uploads (CONTRACT-GUI2.md), per (recipe, role, roi).

Layout, outside every model folder (deleting or rolling back a model never touches samples)::

    <models_dir>/@datasets/<recipe folder>/id.json                    {"recipe_id": ...}
    <models_dir>/@datasets/<recipe folder>/<role folder>/id.json      {"recipe_id", "role_id"}
    <models_dir>/@datasets/<recipe folder>/<role folder>/<roi folder>/
        id.json          {"recipe_id", "role_id", "roi_id"}
        sequence.json    the last stored name issued (names are never reused, even after a delete)
        imported.jsonl   samples brought in by the legacy import (path + sha256): makes it idempotent
        ok/<name>.png  ok/<name>.json   the image as uploaded, and its sidecar
        ng/...

The default namespace is the recipe folder ``default``. Folder names follow the models' rule (the id when
plain, else ``@`` + sha256), so ids such as ``Zona A/1`` or ``../x`` stay inside. Stored names are
``<UTC time to the microsecond>Z-<counter>`` plus the image's own extension, e.g.
``20261201T153458123456Z-000042.png``: unique, strictly increasing in issue order (the time never goes
back, even when the clock does), so they sort chronologically; the content under a name never changes.

The folder's files are the truth; no registry table indexes them (a request lists one folder).
Sidecars are read by the CLI too (``service.quality`` reads the same layout); the rules for their
``mm_per_px`` and shape live here, below both.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from ..errors import BadRequest
from ..pipeline.images import decode_image, image_format
from ..pipeline.masks import parse_shape
from ..validation import DEFAULT_RECIPE, validate_mm_per_px
from .artifacts import ModelStore
from .audit import AuditEvent
from .files import (
    DATASETS_DIR,
    _append_json_line,
    _read_json_lines,
    id_children,
    read_json,
    reporting_full_disk,
    sha256_file,
    utc_now,
    write_atomic,
    write_json_atomic,
)
from .recipes import check_mm_per_px, claim_mm_per_px
from .registry import Registry

LABELS = ("ok", "ng")
SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp",
               ".tif": "image/tiff", ".tiff": "image/tiff"}
SUFFIX_OF_FORMAT = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
SEQUENCE_FILE = "sequence.json"
IMPORTED_FILE = "imported.jsonl"
SIDECAR_SUFFIX = ".json"
META_MISSING = "meta_missing"
"""Sidecar key set (true) on a sample uploaded without its meta: no mm_per_px, no shape, no timestamp."""
_STAMP = "%Y%m%dT%H%M%S"
_STORED_NAME = re.compile(r"(\d{8}T\d{12})Z-(\d{6,})")


# ---- sidecars (shared with service.quality's dataset folders) --------------------------------------
def sidecar_mm_per_px(data: dict[str, Any]) -> float | None:
    """The sidecar's mm_per_px as a float (numeric text accepted), None when absent or null; ValueError with
    the end of a sentence when it is not a finite number > 0."""
    value = data.get("mm_per_px")
    if value is None:
        return None
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"has mm_per_px={value!r}; use a number > 0")
    return number


def sidecar_shape(data: dict[str, Any]) -> str | None:
    """The /infer ``shape`` text of a sidecar: ``shape_json`` (a JSON string, as the GUI writes it) or
    ``shape`` (an object); None: the whole image."""
    shape = data.get("shape_json", data.get("shape"))
    if shape is not None and not isinstance(shape, str):
        shape = json.dumps(shape)
    return shape


def sample_name(filename: str) -> str:
    """The only part of a client's ``filename`` that counts: its last path component (``/`` or ``\\``)."""
    return re.split(r"[/\\]", filename)[-1] if isinstance(filename, str) else ""


def normalize_label(label: str) -> str:
    value = label.strip().lower() if isinstance(label, str) else ""
    if value not in LABELS:
        raise BadRequest(f"label must be 'ok' or 'ng', got {str(label)[:40]!r}.")
    return value


class _HasPath(Protocol):
    @property
    def path(self) -> Path: ...


S = TypeVar("S", bound=_HasPath)


def split_holdout(samples: Sequence[S], rate: float, seed: int) -> tuple[list[S], list[S]]:
    """(fit, held out): a seeded ``rate`` of the samples kept out of the memory, at least one on each
    side when there are two or more. Sorted by path first, so the split ignores listing order."""
    ordered = sorted(samples, key=lambda sample: sample.path.as_posix())
    if rate <= 0 or len(ordered) < 2:
        return ordered, []
    count = min(max(1, round(len(ordered) * rate)), len(ordered) - 1)
    chosen = set(np.random.default_rng(seed).choice(len(ordered), size=count, replace=False).tolist())
    return ([s for i, s in enumerate(ordered) if i not in chosen], [s for i, s in enumerate(ordered) if i in chosen])


def samples_provenance(
    root: Path, fit: Sequence[S], held_out: Sequence[S], rate: float, seed: int, name: Callable[[S], str]
) -> dict[str, Any]:
    """What a fit from samples records in its version's manifest (``dataset``): the samples fitted on and held
    out by ``name`` (their path under ``root``) and by content (sha256), so that `bdi fit` and /fit_ok
    use_dataset=true read each other's records and a renamed folder is still recognised."""
    return {
        "dataset": str(root.resolve()),
        "holdout_rate": rate,
        "seed": seed,
        "fit_files": [name(sample) for sample in fit],
        "holdout_files": [name(sample) for sample in held_out],
        "fit_sha256": [sha256_file(sample.path) for sample in fit],
        "holdout_sha256": [sha256_file(sample.path) for sample in held_out],
    }


def fitted_by_content(samples: Sequence[S], provenance: dict[str, Any]) -> set[Path] | None:
    """The paths of ``samples`` whose sha256 the fit recorded; None when it recorded none (older versions:
    the caller falls back to names)."""
    if provenance.get("fit_sha256") is None:
        return None
    known = set(provenance["fit_sha256"])
    return {sample.path for sample in samples if sha256_file(sample.path) in known}


# ---- uploads ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NewSample:
    """A checked sample, ready to store: the bytes as sent, their extension, the client's meta."""

    data: bytes
    suffix: str
    meta: dict[str, Any]
    client_filename: str
    mm_per_px: float | None


def prepare_sample(filename: str, data: bytes, meta: dict[str, Any] | None, max_pixels: int, where: str) -> NewSample:
    """Decode the image (a file that is not a PNG/JPEG/BMP/TIFF image is refused) and check the meta: a JSON
    object whose mm_per_px, when present, is a finite number > 0, whose shape parses as /infer's and whose
    timestamp is ISO-8601 or null. ``where`` names the sample in the error."""
    decode_image(data, filename, max_pixels)
    kind = image_format(data)
    if kind not in SUFFIX_OF_FORMAT:
        raise BadRequest(f"File {filename!r} is a {kind} image; store PNG, JPEG, BMP or TIFF samples.")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise BadRequest(f"The meta of {where} is not a JSON object; send one JSON object per image, or none.")
    try:
        if "mm_per_px" in meta and meta["mm_per_px"] is None:
            raise ValueError("null")
        mm_per_px = sidecar_mm_per_px(meta)
        if mm_per_px is not None:
            validate_mm_per_px(mm_per_px)
    except (ValueError, BadRequest):
        raise BadRequest(
            f"The meta of {where} has mm_per_px={meta.get('mm_per_px')!r}; send a finite number > 0 (at most 1e6)."
        ) from None
    try:
        parse_shape(sidecar_shape(meta))
    except BadRequest as exc:
        raise BadRequest(f"The meta of {where}: its shape_json is not usable ({exc.message})") from None
    timestamp = meta.get("timestamp")
    if timestamp is not None and _parse_time(timestamp) is None:
        raise BadRequest(f"The meta of {where} has timestamp={timestamp!r:.60}; send an ISO-8601 time or null.")
    client_filename = meta.get("filename") if isinstance(meta.get("filename"), str) else filename
    if mm_per_px is not None:
        meta = {**meta, "mm_per_px": mm_per_px}
    return NewSample(data, SUFFIX_OF_FORMAT[kind], meta, client_filename, mm_per_px)


def prepare_upload(
    label: str, files: Sequence[tuple[str, bytes]], metas: Sequence[str], max_pixels: int
) -> list[NewSample]:
    """Every sample of one upload, checked before anything is written: one bad sample refuses them all."""
    if not files:
        raise BadRequest("No images were sent; attach 1 or more images as 'images'.")
    if metas and len(metas) != len(files):
        raise BadRequest(
            f"{len(metas)} metas for {len(files)} images; send no metas, or exactly one JSON object per image "
            "(in the images' order)."
        )
    samples = []
    for index, (filename, data) in enumerate(files):
        where = f"image {index + 1} ({filename!r})"
        meta = None
        if metas:
            try:
                meta = json.loads(metas[index])
            except (ValueError, RecursionError):
                raise BadRequest(f"The meta of {where} is not valid JSON; send one JSON object per image.") from None
        sample = prepare_sample(filename, data, meta, max_pixels, where)
        # the GUI always sends metas: a sample without one is kept, and its sidecar says the meta is missing
        samples.append(sample if metas else dataclasses.replace(sample, meta={**sample.meta, META_MISSING: True}))
    return samples


# ---- the store -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StoredSample:
    name: str
    label: str
    path: Path

    @property
    def sidecar(self) -> Path:
        return self.path.with_suffix(SIDECAR_SUFFIX)


@dataclasses.dataclass(frozen=True)
class DatasetFolder:
    recipe_id: str
    role_id: str
    roi_id: str
    path: Path


class DatasetStore:
    """The samples of every (recipe, role, roi) under one models dir; writers lock like the models do."""

    def __init__(self, models: ModelStore) -> None:
        self.models = models
        self.root = models.root / DATASETS_DIR

    def folder(self, recipe_id: str, role_id: str, roi_id: str, create: bool = False) -> Path | None:
        recipe_dir = self.models.child(self.root, recipe_id, {"recipe_id": recipe_id}, create)
        if recipe_dir is None:
            return None
        ids = {"recipe_id": recipe_id, "role_id": role_id}
        role_dir = self.models.child(recipe_dir, role_id, ids, create)
        if role_dir is None:
            return None
        return self.models.child(role_dir, roi_id, {**ids, "roi_id": roi_id}, create)

    def scan(self) -> Iterator[DatasetFolder]:
        """Every (recipe, role, roi) with a dataset folder, the default namespace first."""
        recipes = sorted(id_children(self.root), key=lambda item: (item[1].get("recipe_id") != DEFAULT_RECIPE, item[0]))
        for recipe_dir, recipe_ids in recipes:
            for role_dir, _ in id_children(recipe_dir):
                for roi_dir, ids in id_children(role_dir):
                    if {"recipe_id", "role_id", "roi_id"} <= set(ids) and ids["recipe_id"] == recipe_ids.get("recipe_id"):
                        yield DatasetFolder(ids["recipe_id"], ids["role_id"], ids["roi_id"], roi_dir)

    def samples(self, folder: Path | None, label: str) -> list[StoredSample]:
        """The stored images of one class, oldest first (names sort chronologically)."""
        directory = folder / label if folder is not None else None
        if directory is None or not directory.is_dir():
            return []
        return [
            StoredSample(path.name, label, path)
            for path in sorted(directory.iterdir())
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in SAMPLE_SUFFIXES
        ]

    def find(self, folder: Path | None, label: str, filename: str) -> StoredSample | None:
        """The stored sample ``filename`` names; only its last path component counts (``../../x.png`` is
        ``x.png``), and only a stored image of that class is ever found."""
        name = sample_name(filename)
        if folder is None or not name or name.startswith(".") or Path(name).suffix.lower() not in SAMPLE_SUFFIXES:
            return None
        path = folder / label / name
        return StoredSample(name, label, path) if path.is_file() else None

    def digests(self, folder: Path | None, label: str) -> dict[str, str]:
        """sha256 -> stored name of the class's samples (the sidecar's ``sha256``, else the file's), so an upload
        of an image already stored is not stored twice."""
        found: dict[str, str] = {}
        for sample in self.samples(folder, label):
            meta = self.read_meta(sample) or {}
            digest = meta.get("sha256") if isinstance(meta.get("sha256"), str) else None
            try:
                found.setdefault(digest or sha256_file(sample.path), sample.name)
            except FileNotFoundError:  # deleted meanwhile
                continue
        return found

    @staticmethod
    def read_meta(sample: StoredSample) -> dict[str, Any] | None:
        try:
            data = read_json(sample.sidecar)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def add(
        self, recipe_id: str, role_id: str, roi_id: str, label: str, samples: Sequence[NewSample],
        extra: Sequence[dict[str, Any]] | None = None,
    ) -> list[str]:
        """Store checked samples under new names; returns the names. ``extra`` (one dict per sample) adds
        keys to the sidecars (the legacy import's provenance). Each sidecar is written before its image, so
        a listed image always has its sidecar; a write that fails (a full disk: 507) takes back the files
        it wrote, so either every sample of the call is stored or none is."""
        folder = self.folder(recipe_id, role_id, roi_id, create=True)
        assert folder is not None
        written: list[Path] = []
        needed = sum(len(sample.data) for sample in samples)
        with self.models.locked(folder), reporting_full_disk(f"{len(samples)} {label} sample(s)", self.root, needed):
            try:
                stored = self._issue_names(folder, [sample.suffix for sample in samples])
                (folder / label).mkdir(exist_ok=True)
                for index, (sample, name) in enumerate(zip(samples, stored)):
                    path = folder / label / name
                    added = extra[index] if extra is not None else {}
                    sidecar = {
                        **sample.meta,
                        **added,
                        "role_id": role_id,
                        "roi_id": roi_id,
                        "label": label,
                        "recipe_id": recipe_id,
                        "filename": name,
                        "client_filename": sample.client_filename,
                        "created_at_utc": added.get("created_at_utc") or utc_now(),
                        "sha256": hashlib.sha256(sample.data).hexdigest(),
                    }
                    written.append(path.with_suffix(SIDECAR_SUFFIX))
                    write_json_atomic(written[-1], sidecar)
                    written.append(path)
                    write_atomic(path, sample.data)
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                raise
        return stored

    def _issue_names(self, folder: Path, suffixes: Sequence[str]) -> list[str]:
        """New names, each later than every name issued before in this folder; recorded before any file is
        written, so a crash never leads to a name being issued twice. Call inside the folder's lock."""
        try:
            last = read_json(folder / SEQUENCE_FILE)
        except (OSError, ValueError):
            last = {}
        last_name = str(last.get("last_name") or "") if isinstance(last, dict) else ""
        existing = [s.name for label in LABELS for s in self.samples(folder, label)]
        last_name = max([last_name, *existing])  # sequence.json lost or behind: never below what is stored
        match = _STORED_NAME.match(last_name)
        previous = dt.datetime.strptime(match.group(1), _STAMP + "%f") if match else None
        counter = int(match.group(2)) if match else 0
        moment = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        names = []
        for suffix in suffixes:
            if previous is not None and moment <= previous:
                moment = previous + dt.timedelta(microseconds=1)
            counter += 1
            names.append(f"{moment.strftime(_STAMP)}{moment.microsecond:06d}Z-{counter:06d}{suffix}")
            previous = moment
        if names:
            write_json_atomic(folder / SEQUENCE_FILE, {"last_name": names[-1], "issued_at": utc_now()})
        return names

    def delete(self, folder: Path | None, sample: StoredSample | None) -> bool:
        """Remove an image and its sidecar; False when there was no such image."""
        if folder is None or sample is None:
            return False
        with self.models.locked(folder):
            existed = sample.path.is_file()
            sample.sidecar.unlink(missing_ok=True)
            sample.path.unlink(missing_ok=True)
        return existed

    # ---- legacy import journal -------------------------------------------------------------------
    def imported(self, folder: Path | None) -> set[tuple[str, str]]:
        """(legacy path, sha256) of every sample the legacy import brought into this folder."""
        entries = _read_json_lines(folder / IMPORTED_FILE) if folder is not None else []
        return {(str(entry.get("legacy_path")), str(entry.get("sha256"))) for entry in entries}

    def record_import(self, folder: Path, entry: dict[str, Any]) -> None:
        with reporting_full_disk(f"the record of a legacy import ({IMPORTED_FILE})", self.root):
            _append_json_line(folder / IMPORTED_FILE, entry)


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class SavedSamples:
    """One stored name per sample, in the order sent, and those of them that were stored before (same bytes, same
    class: not stored again)."""

    saved: list[str]
    already_stored: list[str]


def store_samples(
    datasets: DatasetStore, registry: Registry, recipe_id: str, role_id: str, roi_id: str, label: str,
    samples: Sequence[NewSample], audit: AuditEvent | None = None,
) -> SavedSamples:
    """Store checked samples (an upload, ``bdi datasets import``): their mm_per_px values must agree with the
    named recipe's lock, the first one locking it, before anything is written (409 otherwise). ``audit``
    (the upload's event): its ``recipe_mm_per_px`` row when the samples lock the recipe, its own row once they
    are stored."""
    mm_values = [sample.mm_per_px for sample in samples if sample.mm_per_px is not None]
    check_mm_per_px(registry, recipe_id, mm_values)
    if mm_values:
        claim_mm_per_px(datasets.models, registry, recipe_id, mm_values[0],
                        audit.about(action="recipe_mm_per_px") if audit is not None else None)
    stored = datasets.digests(datasets.folder(recipe_id, role_id, roi_id), label)
    digests = [hashlib.sha256(sample.data).hexdigest() for sample in samples]
    new: dict[str, NewSample] = {}  # by digest: an image sent twice in one upload is stored once
    for digest, sample in zip(digests, samples):
        if digest not in stored:
            new.setdefault(digest, sample)
    names = dict(zip(new, datasets.add(recipe_id, role_id, roi_id, label, list(new.values())))) if new else {}
    saved = [stored.get(digest) or names[digest] for digest in digests]
    already = [name for digest, name in zip(digests, saved) if digest in stored]
    if audit is not None and names:
        registry.record(audit.about(recipe_id=recipe_id, role_id=role_id, roi_id=roi_id,
                                    details={**(audit.details or {}), "label": label, "saved": list(names.values())}))
    return SavedSamples(saved, already)

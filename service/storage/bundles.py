"""Model bundles: one file that moves a model's active version, with its calibration, from one host to
another (a pilot cell to the production cells), checked on arrival.

A bundle (``.bdimodel``) is a zip archive whose members are stored, not compressed:

    manifest.json    what the bundle is (``Manifest``): format and format version, bundle id, ids, version,
                     token grid, embedding dim, extractor fingerprint, the version's version.json, a summary
                     of the calibration, created_at (UTC), source host, service version, and the sha256 and
                     size of every other member
    memory.npz       the version's files, byte for byte (their sha256s in version.json hold on the target too)
    index.faiss      (when the version has one)
    calib.json       the active calibration (when calibrated)
    history.jsonl    the calibration history, one entry a line, each with the uid the source's registry knows

Why zip and not tar: a zip's central directory names every member with its size and offset before any
byte of it is read, so a foreign or damaged file is refused from the directory alone (a tar has to be read
from its start, member after member); every member carries a CRC-32 that ``zipfile`` checks while reading,
on top of the manifest's sha256s; members are stored, so no member can claim more bytes than the file
holds (no zip bomb), and ``memory.npz`` (itself a stored zip) is copied as it is. Windows cell PCs open it
with their own tools. Nothing is ever extracted by member name: the import reads the members it knows into
memory and refuses a bundle holding any other name (``../x`` included).

An import verifies everything before it writes anything (``read_bundle``, then ``check_compatible`` and the
recipe's mm/px lock), then writes under the model's lock in one undoable write (``ModelStore.writing``) and
registers it in one transaction (``Registry.add_import``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import socket
import time
import uuid
import zipfile
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np

from .. import __version__
from ..errors import BadRequest
from ..pipeline.patchcore import flat_index_problem
from ..settings import PATCH_SIZE
from ..validation import DEFAULT_RECIPE, normalize_recipe, validate_id, validate_mm_per_px
from .artifacts import ModelStore
from .audit import AuditEvent
from .files import CALIB_FILE, HISTORY_FILE, INDEX_FILE, MEMORY_FILE, TMP_PREFIX, VERSION_FILE, _fsync_dir, utc_now
from .reading import ModelFolder
from .recipes import check_mm_per_px, claim_mm_per_px, release_mm_per_px
from .registry import Registry
from .registry.database import calibration_uid
from .versions import VersionFiles

logger = logging.getLogger(__name__)

FORMAT = "bdi-model-bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
MEMBERS = (MEMORY_FILE, INDEX_FILE, CALIB_FILE, HISTORY_FILE)  # besides the manifest, in the order written
MAX_SMALL_MEMBER = 64 * 1024 * 1024  # manifest, calibration, history: far above any real one
CHUNK = 1 << 20

NEW_VERSION, ACTIVATED, UNCHANGED = "imported", "activated", "unchanged"  # ImportResult.outcome

Hex64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
Count = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Rate = Annotated[float, msgspec.Meta(gt=0, le=1)]  # NaN fails every bound
Radius = Annotated[float, msgspec.Meta(ge=0, le=1e30)]  # 0: the coreset kept every patch; inf refused


class FileEntry(msgspec.Struct):
    sha256: Hex64
    bytes: Count


class Manifest(msgspec.Struct):
    """manifest.json (format version 1). Keys a later format adds are ignored by this one only when it keeps
    ``format_version`` 1; a reader refuses a higher ``format_version``."""

    format: str
    format_version: int
    bundle_id: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{32}$")]
    created_at: str
    source_host: str
    service_version: str
    recipe_id: str
    role_id: str
    roi_id: str
    version: Positive
    token_grid: tuple[Positive, Positive]
    embed_dim: Positive
    extractor: dict[str, Any] | None
    version_manifest: dict[str, Any]  # the exported version's version.json, as it is on the source
    calibration: dict[str, Any] | None  # threshold, memory_version, source, created_at of the active calibration
    files: dict[str, FileEntry]


class VersionNumbers(msgspec.Struct):
    """What an import takes from the exported version's version.json (the rest stays in the bundle)."""

    n_embeddings: Positive
    coreset_size: Positive
    token_h: Positive
    token_w: Positive
    embed_dim: Positive
    source: Annotated[str, msgspec.Meta(max_length=16)]
    created_at: Annotated[str, msgspec.Meta(max_length=40)]
    coreset_rate_requested: Rate | None = None
    coreset_rate_applied: Rate | None = None
    extractor: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    covering_radius: Radius | None = None
    coreset_seed: Count | None = None
    projection_dim: Positive | None = None
    parent_version: Positive | None = None
    ancestors: list[Positive] = msgspec.field(default_factory=list)
    imported: dict[str, Any] | None = None
    train_width: Positive | None = None  # the training images' size: /infer warns about another size
    train_height: Positive | None = None


class CalibrationValues(msgspec.Struct):
    """calib.json's numbers as the registry stores them (other keys travel along untouched)."""

    threshold: float
    ok_mean: float | None = None
    ng_mean: float | None = None
    p99_ok: float | None = None
    p5_ng: float | None = None
    mm_per_px: float | None = None
    area_mm2_thr: float | None = None
    score_percentile: int | None = None


class HistoryEntry(msgspec.Struct):
    """One history.jsonl line, sized to the registry's columns."""

    uid: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    calibration: CalibrationValues
    source: Annotated[str, msgspec.Meta(max_length=16)] = "api"
    created_at: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    memory_version: Positive | None = None
    correlation_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    client: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class BundleError(Exception):
    """A file that is not a bundle, or a damaged one: one sentence; nothing was written (CLI exit 2)."""


class IncompatibleBundle(BundleError):
    """A sound bundle built for another backbone or input size than this host's (CLI exit 1)."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A bundle read whole and verified (``read_bundle``): ready to import, nothing written yet."""

    path: Path
    manifest: Manifest
    numbers: VersionNumbers
    memory: bytes
    index: bytes | None
    fit_mm_per_px: float | None  # what the memory was fitted with (its metadata), for a recipe's mm/px lock
    calibration: dict[str, Any] | None
    history: list[dict[str, Any]]  # the last one is ``calibration``'s entry


@dataclasses.dataclass(frozen=True)
class ImportResult:
    outcome: str  # NEW_VERSION (a new version), ACTIVATED (one imported earlier from this bundle) or UNCHANGED
    recipe_id: str
    role_id: str
    roi_id: str
    version: int
    active: bool
    calibrations: int  # history entries appended
    notes: list[str]


# ---- export -----------------------------------------------------------------------------------------
def export_bundle(store: ModelStore, folder: Path, output: Path) -> dict[str, Any]:
    """Write the active version of the model in ``folder``, its calibration and history to ``output``; answer
    the manifest. Written to a temp file next to ``output`` and renamed into place, so a half-written bundle
    never has the final name (an existing file there stays as it was until then). The model's lock is held
    throughout: a fit or calibration of it (on any host) waits, and the bundle is one consistent state."""
    with store.locked(folder):
        described = store.describe(folder)
        if described is None:
            raise BadRequest(f"The folder {store.relative(folder)} holds no model (its id.json can't be read).")
        label = f"role_id={described.role_id!r} roi_id={described.roi_id!r}"
        if described.recipe_id != DEFAULT_RECIPE:
            label += f" of recipe {described.recipe_id!r}"
        if described.active_version is None:
            raise BadRequest(f"The model {label} has no active memory version to export; fit it (or activate one) first.")
        files = store.version_files(folder, described.active_version)
        history = [{**entry, "uid": calibration_uid(store.relative(folder), entry)} for entry in described.calibrations]
        small = {}
        if history:
            small[CALIB_FILE] = (json.dumps(history[-1]["calibration"], ensure_ascii=False, indent=2) + "\n").encode()
            small[HISTORY_FILE] = b"".join(
                (json.dumps(entry, ensure_ascii=False) + "\n").encode() for entry in history
            )
        tmp = output.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{output.name}"
        try:
            with open(tmp, "wb") as handle:
                with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
                    entries = {MEMORY_FILE: _copy_in(archive, files.memory_path, MEMORY_FILE)}
                    if files.index_path is not None:
                        entries[INDEX_FILE] = _copy_in(archive, files.index_path, INDEX_FILE)
                    for name, entry in entries.items():
                        key = "memory_sha256" if name == MEMORY_FILE else "index_sha256"
                        if entry.sha256 != files.manifest.get(key):
                            raise BadRequest(
                                f"Version {files.version} of {label} is damaged: its {name} does not match the sha256 "
                                f"in {VERSION_FILE}; run `bdi models verify`; no bundle was written."
                            )
                    for name, data in small.items():
                        archive.writestr(_member(name), data)
                        entries[name] = FileEntry(hashlib.sha256(data).hexdigest(), len(data))
                    manifest = _manifest(described, files, history, entries)
                    archive.writestr(_member(MANIFEST_FILE), json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(output.parent)
    return manifest


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
    info.compress_type = zipfile.ZIP_STORED
    return info


def _copy_in(archive: zipfile.ZipFile, path: Path, name: str) -> FileEntry:
    """Stream a file into the archive, hashing what was written (zip64 headers: a memory kept whole by
    memory_fit can pass the plain zip's 2 GB)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as source, archive.open(_member(name), "w", force_zip64=True) as target:
        for chunk in iter(lambda: source.read(CHUNK), b""):
            digest.update(chunk)
            target.write(chunk)
            size += len(chunk)
    return FileEntry(digest.hexdigest(), size)


def _manifest(
    described: ModelFolder, files: VersionFiles, history: list[dict[str, Any]], entries: dict[str, FileEntry]
) -> dict[str, Any]:
    version = files.manifest
    calibration = history[-1] if history else None
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        bundle_id=uuid.uuid4().hex,
        created_at=utc_now(),
        source_host=socket.gethostname(),
        service_version=__version__,
        recipe_id=described.recipe_id,
        role_id=described.role_id,
        roi_id=described.roi_id,
        version=files.version,
        token_grid=(int(version["token_h"]), int(version["token_w"])),
        embed_dim=int(version["embed_dim"]),
        extractor=version.get("extractor"),
        version_manifest=version,
        calibration=None if calibration is None else {
            "threshold": calibration["calibration"].get("threshold"),
            "memory_version": calibration.get("memory_version"),
            "source": calibration.get("source"),
            "created_at": calibration.get("created_at"),
        },
        files=entries,
    )
    return msgspec.to_builtins(manifest)


# ---- read and verify --------------------------------------------------------------------------------
def read_bundle(path: Path) -> Bundle:
    """The bundle at ``path``, every member read and checked against the manifest (sha256, size), the memory
    against its numbers (rows, dims, token grid, index), the calibration and history against the registry's
    columns. ``BundleError`` with one sentence for a foreign or damaged file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not _whole_zip(path, size):
            raise _foreign(path, "not a zip archive, or one cut short: a truncated copy?")
        with zipfile.ZipFile(path) as archive:
            infos = _check_directory(path, archive, size)
            manifest = _read_manifest(path, archive, infos[MANIFEST_FILE])
            data = {}
            for name, info in infos.items():
                if name == MANIFEST_FILE:
                    continue
                data[name] = archive.read(info)
                expected = manifest.files[name]
                if hashlib.sha256(data[name]).hexdigest() != expected.sha256:
                    raise _damaged(path, f"its {name} does not match the sha256 in its manifest (changed after export)")
        return _verified(path, manifest, data)
    except BundleError:
        raise
    except OSError as exc:
        raise BundleError(f"{path} can't be read ({exc.strerror or exc}); nothing was changed.") from None
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, ValueError) as exc:  # ValueError: a malformed header
        raise _damaged(path, f"its zip data can't be read: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - MemoryError, zipfile's RuntimeError/NotImplementedError, ...: damaged
        raise _damaged(path, f"it can't be read ({type(exc).__name__}: {exc})") from None


def _whole_zip(path: Path, size: int) -> bool:
    """Starts with a zip member and ends with the end-of-archive record, as an export writes it (no comment).
    ``zipfile`` alone would take a bundle cut short for the memory.npz inside it (a zip too)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(0, size - 22))
        tail = handle.read(22)
    return head == b"PK\x03\x04" and len(tail) == 22 and tail[:4] == b"PK\x05\x06"


def _foreign(path: Path, why: str) -> BundleError:
    return BundleError(f"{path.name} is not a model bundle ({why}); `bdi models export` writes one; nothing was changed.")


def _damaged(path: Path, why: str) -> BundleError:
    return BundleError(
        f"{path.name} is a damaged model bundle ({why}); copy it again from its source, or export it again there; "
        "nothing was changed."
    )


def _check_directory(path: Path, archive: zipfile.ZipFile, size: int) -> dict[str, zipfile.ZipInfo]:
    """The members by name, from the central directory alone: known names only, each once, stored, within
    the file."""
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if MANIFEST_FILE not in names:
        raise _foreign(path, f"a zip archive without {MANIFEST_FILE}")
    unknown = [name for name in names if name not in (MANIFEST_FILE, *MEMBERS)]
    if unknown:
        raise _damaged(path, f"it holds {unknown[0]!r}, a name no bundle holds (only {MANIFEST_FILE}, {', '.join(MEMBERS)})")
    if len(set(names)) != len(names):
        raise _damaged(path, "it names a member twice")
    for info in infos:
        if info.flag_bits & 0x1:
            raise _damaged(path, f"its {info.filename} is encrypted; bundles never are")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise _damaged(path, f"its {info.filename} is compressed; bundles store members as they are")
        if info.header_offset + info.compress_size > size:
            raise _damaged(path, f"its {info.filename} claims {info.file_size} bytes, more than the file holds")
        if info.filename not in (MEMORY_FILE, INDEX_FILE) and info.file_size > MAX_SMALL_MEMBER:
            raise _damaged(path, f"its {info.filename} claims {info.file_size} bytes, far more than one ever holds")
    return {info.filename: info for info in infos}


def _read_manifest(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Manifest:
    try:
        raw = json.loads(archive.read(info))
    except (ValueError, RecursionError):
        raise _foreign(path, f"its {MANIFEST_FILE} is not JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise _foreign(path, f"its {MANIFEST_FILE} does not say format {FORMAT!r}")
    format_version = raw.get("format_version")
    if isinstance(format_version, int) and format_version > FORMAT_VERSION:
        raise BundleError(
            f"{path.name} was written in bundle format {format_version} by a newer version of this service "
            f"({raw.get('service_version')}); this one reads format {FORMAT_VERSION}: upgrade this host; nothing was changed."
        )
    try:
        manifest = msgspec.convert(raw, Manifest)
    except msgspec.ValidationError as exc:
        raise _damaged(path, f"its {MANIFEST_FILE} is not valid: {exc}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise _damaged(path, f"its {MANIFEST_FILE} names format version {manifest.format_version}")
    members = {info.filename for info in archive.infolist()} - {MANIFEST_FILE}
    if set(manifest.files) != members:
        raise _damaged(path, f"its members ({', '.join(sorted(members))}) are not those its manifest lists "
                             f"({', '.join(sorted(manifest.files))})")
    for name, entry in manifest.files.items():
        if archive.getinfo(name).file_size != entry.bytes:
            raise _damaged(path, f"its {name} holds {archive.getinfo(name).file_size} bytes, its manifest says {entry.bytes}")
    return manifest


def _verified(path: Path, manifest: Manifest, data: dict[str, bytes]) -> Bundle:
    """The members' content against the manifest and the registry's columns."""
    try:
        for field in ("role_id", "roi_id"):
            validate_id(field, getattr(manifest, field))
        normalize_recipe(manifest.recipe_id)
        numbers = msgspec.convert(manifest.version_manifest, VersionNumbers)
    except BadRequest as exc:
        raise _damaged(path, f"its ids can't be used: {exc.message}") from None
    except msgspec.ValidationError as exc:
        raise _damaged(path, f"its version manifest is not valid: {exc}") from None
    if MEMORY_FILE not in data:
        raise _damaged(path, f"it holds no {MEMORY_FILE}")
    try:
        embeddings, grid, metadata = _read_memory(data[MEMORY_FILE])
    except Exception as exc:  # noqa: BLE001 - a damaged npz raises many kinds of errors
        raise _damaged(path, f"its {MEMORY_FILE} can't be read ({type(exc).__name__}: {exc})") from None
    expected = ((numbers.coreset_size, numbers.embed_dim), (numbers.token_h, numbers.token_w))
    if (embeddings.shape, grid) != expected or grid != manifest.token_grid or numbers.embed_dim != manifest.embed_dim:
        raise _damaged(path, f"its {MEMORY_FILE} holds {embeddings.shape} rows on grid {grid}, its manifest says "
                             f"{expected[0]} on grid {manifest.token_grid}")
    if metadata.get("extractor") != manifest.extractor or numbers.extractor != manifest.extractor:
        raise _damaged(path, f"its {MEMORY_FILE} and its manifest name different extractors")
    for name, key in ((MEMORY_FILE, "memory_sha256"), (INDEX_FILE, "index_sha256")):
        if name in manifest.files and manifest.version_manifest.get(key) != manifest.files[name].sha256:
            raise _damaged(path, f"its {name} is not the file its version manifest names")
    index = data.get(INDEX_FILE)
    problem = flat_index_problem(index, *embeddings.shape) if index is not None else None
    if problem is not None:  # never deserialised here: loading the version checks its vectors against the memory
        raise _damaged(path, problem)
    calibration, history = _read_calibrations(path, data.get(CALIB_FILE), data.get(HISTORY_FILE))
    fit_mm_per_px = metadata.get("mm_per_px")
    try:
        fit_mm_per_px = None if fit_mm_per_px is None else validate_mm_per_px(fit_mm_per_px)
        if calibration is not None and calibration.get("mm_per_px") is not None:
            validate_mm_per_px(calibration["mm_per_px"])
    except BadRequest as exc:
        raise _damaged(path, exc.message) from None
    return Bundle(path, manifest, numbers, data[MEMORY_FILE], index, fit_mm_per_px, calibration, history)


def _read_memory(data: bytes) -> tuple[np.ndarray, tuple[int, int], dict[str, Any]]:
    """memory.npz as ``np.savez`` wrote it: its entries stored (no entry reads past the bytes given) and the
    embeddings' header checked before their array is allocated."""
    with zipfile.ZipFile(io.BytesIO(data)) as npz:
        infos = {info.filename: info for info in npz.infolist()}
        if not {"emb.npy", "token_h.npy", "token_w.npy"} <= set(infos):
            raise ValueError("emb, token_h or token_w is missing")
        if any(info.compress_type != zipfile.ZIP_STORED for info in infos.values()):
            raise ValueError("its entries are compressed, which np.savez never does")
        with npz.open("emb.npy") as handle:
            major_minor = np.lib.format.read_magic(handle)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if major_minor not in read_header:
                raise ValueError(f"npy format {major_minor} is not one np.savez writes")
            shape, _, dtype = read_header[major_minor](handle)
        if len(shape) != 2 or dtype != np.dtype("<f4") or math.prod(shape) * 4 > infos["emb.npy"].file_size:
            raise ValueError(f"emb is {dtype} of shape {shape}, not float32 rows within the file")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        embeddings = npz["emb"]
        grid = (int(npz["token_h"]), int(npz["token_w"]))
        metadata = json.loads(str(npz["metadata"])) if "metadata" in npz.files else {}
    if not isinstance(metadata, dict):
        raise TypeError("its metadata is not a JSON object")
    return embeddings, grid, metadata


def _read_calibrations(
    path: Path, calib: bytes | None, history: bytes | None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(calib.json, history entries): both or neither, calib.json being the last entry's calibration."""
    if (calib is None) != (history is None):
        raise _damaged(path, f"it holds one of {CALIB_FILE} and {HISTORY_FILE} without the other")
    if calib is None or history is None:
        return None, []
    try:
        values = json.loads(calib)
        entries = [json.loads(line) for line in history.decode("utf-8").splitlines() if line.strip()]
        for item in [values, *(entry.get("calibration") if isinstance(entry, dict) else None for entry in entries)]:
            numbers = msgspec.to_builtins(msgspec.convert(item, CalibrationValues))
            if not all(math.isfinite(value) for value in numbers.values() if value is not None):
                raise ValueError("a calibration holds a number that is not finite")
        for entry in entries:
            msgspec.convert(entry, HistoryEntry)
    except (ValueError, RecursionError, msgspec.ValidationError) as exc:
        raise _damaged(path, f"its calibration can't be used: {exc}") from None
    if not entries or entries[-1]["calibration"] != values:
        raise _damaged(path, f"its {CALIB_FILE} is not the last calibration of its {HISTORY_FILE}")
    return values, entries


# ---- import -----------------------------------------------------------------------------------------
def running_grid(fingerprint: dict[str, Any]) -> tuple[int, int]:
    side = int(fingerprint["input_size"]) // PATCH_SIZE
    return side, side


def check_compatible(bundle: Bundle, running: dict[str, Any], force: bool = False) -> list[str]:
    """Notes for the import; ``IncompatibleBundle`` when this host (``running``: its extractor fingerprint)
    would not score the memory as its source did (another token grid, other backbone weights), unless
    ``force``."""
    manifest, built = bundle.manifest, bundle.manifest.extractor or {}
    problems, notes = [], []
    grid = running_grid(running)
    if tuple(manifest.token_grid) != grid:
        size = built.get("input_size") or manifest.token_grid[0] * PATCH_SIZE
        problems.append(
            f"its memory has token grid {_grid(manifest.token_grid)} (input size {size}), this host's is {_grid(grid)} "
            f"(BDI_INPUT_SIZE={running['input_size']})"
        )
    if running.get("weights_sha256") is None:
        notes.append("This host's backbone weights (BDI_WEIGHTS=hub) are not in its Hugging Face cache, so the import "
                     "could not check that the bundle's memory was built with them; the service downloads them when "
                     "it starts: make sure both hosts run the same BDI_WEIGHTS.")
    elif not built.get("weights_sha256"):
        notes.append("The bundle does not record the backbone weights its memory was built with (a memory migrated "
                     "from an earlier backend): check that both hosts run the same BDI_WEIGHTS.")
    elif any(built.get(key) != running[key] for key in ("weights_sha256", "model", "layers")):
        problems.append(f"its memory was built with other backbone weights ({_weights(built)}) than this host's "
                        f"({_weights(running)}; BDI_WEIGHTS)")
    if built.get("precision") not in (None, running["precision"]):
        notes.append(f"It was built at precision {built['precision']} and this host runs {running['precision']} "
                     "(BDI_PRECISION): its scores may differ slightly from the source's.")
    if problems and not force:
        raise IncompatibleBundle(
            f"{bundle.path.name} can't be served as its source served it: {'; '.join(problems)}; run this host with the "
            f"settings the model was built with, or refit the ROI here (--force imports it anyway, but it would not "
            f"score what it scored on {manifest.source_host}); nothing was changed."
        )
    return [*(f"Imported with --force although {problem}: refit it or serve it with the settings it was built with."
              for problem in problems), *notes]


def _grid(grid: Any) -> str:
    return f"{grid[0]}×{grid[1]}"


def _weights(fingerprint: dict[str, Any]) -> str:
    sha = str(fingerprint.get("weights_sha256") or "")[:12]
    return f"{fingerprint.get('model')} {fingerprint.get('weights')}, weights_tensor_sha256 {sha}…"


def import_bundle(
    store: ModelStore, registry: Registry, bundle: Bundle, running: dict[str, Any], *, role_id: str | None = None,
    roi_id: str | None = None, recipe_id: str | None = None, activate: bool = True, force: bool = False,
    audit: AuditEvent | None = None,
) -> ImportResult:
    """Add the bundle's memory as a new version of (recipe, role, roi) (the bundle's own ids unless given),
    activated with its calibration unless ``activate`` is False. Everything is checked first
    (``check_compatible``, the target recipe's mm/px lock); a bundle already imported into that model (its
    version still kept) is not imported twice: UNCHANGED, or ACTIVATED when it was imported with
    --no-activate and is activated now."""
    manifest = bundle.manifest
    role_id = validate_id("role_id", role_id or manifest.role_id)
    roi_id = validate_id("roi_id", roi_id or manifest.roi_id)
    recipe = normalize_recipe(manifest.recipe_id if recipe_id is None else recipe_id)
    notes = check_compatible(bundle, running, force)
    registry.state_or_import(store, role_id, roi_id, recipe_id=recipe)  # a folder the registry does not know yet
    applied = bundle.calibration if activate else None
    values = [value for value in (bundle.fit_mm_per_px, (applied or {}).get("mm_per_px")) if value is not None]
    check_mm_per_px(registry, recipe, values)
    claimed = bool(values) and claim_mm_per_px(
        store, registry, recipe, values[0], audit.about(action="recipe_mm_per_px") if audit is not None else None
    )
    try:
        return _write_import(store, registry, bundle, role_id, roi_id, recipe, activate, notes, audit)
    except BaseException:
        if claimed:
            try:
                release_mm_per_px(store, registry, recipe)
            except Exception as exc:  # noqa: BLE001 - the import's own failure is the one to report
                logger.warning("The mm/px lock of recipe %r claimed by a failed import stays: releasing it failed "
                               "(%s)", recipe, exc)
        raise


def _write_import(
    store: ModelStore, registry: Registry, bundle: Bundle, role_id: str, roi_id: str, recipe: str, activate: bool,
    notes: list[str], audit: AuditEvent | None = None,
) -> ImportResult:
    """The import's one write, under the model's lock, undone as a whole when it fails; ``audit``'s row commits
    with its registration."""
    manifest = bundle.manifest
    with store.writing(role_id, roi_id, recipe_id=recipe) as folder:
        previous = store.active_version(folder)
        earlier = [files.version for files in store.versions(folder)
                   if (files.manifest.get("imported") or {}).get("bundle_id") == manifest.bundle_id]
        if earlier and (not activate or previous == earlier[-1]):
            return ImportResult(UNCHANGED, recipe, role_id, roi_id, earlier[-1], previous == earlier[-1], 0, [])
        if earlier:
            number, outcome = earlier[-1], ACTIVATED
            store.activate(folder, number)
        else:
            number, outcome = store.add_version_files(folder, bundle.memory, bundle.index, _fields(bundle), activate).version, NEW_VERSION
        entries = _history_entries(bundle, store, folder, number) if activate else []
        for entry in entries:
            store.write_calibration(folder, entry["calibration"], {k: v for k, v in entry.items() if k != "calibration"})
        registry.add_import(store, role_id, roi_id, folder, entries, recipe_id=recipe, audit=audit.about(
            details={**(audit.details or {}), "bundle_id": manifest.bundle_id, "activate": activate},
        ) if audit is not None else None)
        notes += _calibration_notes(bundle, store, folder, activate, previous, number)
    return ImportResult(outcome, recipe, role_id, roi_id, number, activate, len(entries), notes)


def _provenance(bundle: Bundle) -> dict[str, Any]:
    """Where an imported version or calibration came from, recorded with it."""
    manifest = bundle.manifest
    return {
        "bundle": bundle.path.name,
        "bundle_id": manifest.bundle_id,
        "source_host": manifest.source_host,
        "exported_at": manifest.created_at,
        "service_version": manifest.service_version,
        "recipe_id": manifest.recipe_id,
        "role_id": manifest.role_id,
        "roi_id": manifest.roi_id,
        "imported_at": utc_now(),
    }


def _fields(bundle: Bundle) -> dict[str, Any]:
    """version.json of the imported version: the source's numbers (an append on this host continues from its
    covering radius and seed), no lineage here (its parent and ancestors are the source's, kept in
    ``imported``)."""
    numbers = bundle.numbers
    imported = {
        **_provenance(bundle),
        "version": bundle.manifest.version,
        "source": numbers.source,
        "created_at": numbers.created_at,
        "parent_version": numbers.parent_version,
        "ancestors": numbers.ancestors,
    }
    if numbers.imported is not None:
        imported["imported"] = numbers.imported  # the source had imported it in turn
    return {
        "source": "imported",
        "legacy_path": None,
        "n_embeddings": numbers.n_embeddings,
        "coreset_size": numbers.coreset_size,
        "coreset_rate_requested": numbers.coreset_rate_requested,
        "coreset_rate_applied": numbers.coreset_rate_applied,
        "token_h": numbers.token_h,
        "token_w": numbers.token_w,
        "embed_dim": numbers.embed_dim,
        "extractor": numbers.extractor,
        "dataset": numbers.dataset,
        "covering_radius": numbers.covering_radius,
        "coreset_seed": numbers.coreset_seed,
        "projection_dim": numbers.projection_dim,
        "parent_version": None,
        "ancestors": [],
        "append": None,
        "imported": imported,
        "train_width": numbers.train_width,
        "train_height": numbers.train_height,
    }


def _history_entries(bundle: Bundle, store: ModelStore, folder: Path, number: int) -> list[dict[str, Any]]:
    """The history entries to append: each earlier calibration of the bundle once per model (a uid derived from
    the target folder and the original uid; one the model already holds, from an earlier import or because it
    is its own, is left out), then the active calibration, always (it becomes the model's), made for
    ``number`` when it was made for the exported version."""
    if not bundle.history:
        return []
    relative = store.relative(folder)
    history = store.calibration_history(folder)
    present = {entry.get("uid") for entry in history} | {(entry.get("imported") or {}).get("uid") for entry in history}

    def derived(entry: dict[str, Any]) -> str:
        return hashlib.sha256(f"{relative}\n{entry['uid']}".encode()).hexdigest()[:32]

    def imported(entry: dict[str, Any], uid: str, memory_version: int | None) -> dict[str, Any]:
        provenance = {**_provenance(bundle), "uid": entry["uid"], "memory_version": entry.get("memory_version")}
        return {**entry, "uid": uid, "memory_version": memory_version, "imported": provenance}

    entries = [imported(entry, derived(entry), None) for entry in bundle.history[:-1]
               if entry["uid"] not in present and derived(entry) not in present]
    active = bundle.history[-1]
    uid = derived(active) if active["uid"] not in present and derived(active) not in present else uuid.uuid4().hex
    made_for = number if active.get("memory_version") == bundle.manifest.version else None
    return [*entries, imported(active, uid, made_for)]


def _calibration_notes(
    bundle: Bundle, store: ModelStore, folder: Path, activate: bool, previous: int | None, number: int
) -> list[str]:
    if not activate:
        note = (f"Version {number} is kept but not active; its calibration was not applied. Import the bundle again "
                "without --no-activate to activate it with its calibration (`bdi models rollback` would keep the "
                "current calibration).")
    elif bundle.calibration is None:
        kept = store.read_calibration(folder)
        note = f"The bundle holds no calibration: calibrate version {number} before inspecting with it."
        if kept is not None:
            note = (f"The bundle holds no calibration: the model keeps its calibration (threshold "
                    f"{kept.get('threshold')}), made for version {previous}; calibrate version {number}.")
    elif (made_for := bundle.history[-1].get("memory_version")) != bundle.manifest.version:
        note = (f"Its calibration was made for version {made_for} on {bundle.manifest.source_host}, not for the "
                f"exported version {bundle.manifest.version}: check it, or calibrate version {number}.")
    else:
        return []
    return [note]


__all__ = [
    "ACTIVATED", "FORMAT", "FORMAT_VERSION", "MANIFEST_FILE", "NEW_VERSION", "UNCHANGED", "Bundle", "BundleError",
    "ImportResult", "IncompatibleBundle", "Manifest", "check_compatible", "export_bundle",
    "import_bundle", "read_bundle",
]

"""The GUI's dataset folders, read for ``bdi fit``, ``bdi calibrate`` (and ``eval``).

A dataset folder holds ``ok/`` and ``ng/`` (or ``ko/``) subfolders of PNG/JPG/BMP samples, either
directly or as ``<dataset>/<role>/<roi>/``. Each sample may have a same-stem ``.json`` sidecar with
``mm_per_px``, the ``/infer`` shape (``shape_json`` as a JSON string, or ``shape`` as an object),
``role_id`` and ``roi_id``. ``<stem>_mask.png`` files are ground-truth masks of the sample
``<stem>``, never samples themselves. Public data sets often put a mask under the sample's own name
(``x.jpg`` + ``x.png``): such pairs, and images with at most two grey levels (a mask or a blank frame),
are refused with a sentence that says how to lay masks out, so they are never fitted or scored as parts.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..storage.datasets import (
    SAMPLE_SUFFIXES,
    fitted_by_content,
    samples_provenance,
    sidecar_mm_per_px,
    sidecar_shape,
    split_holdout,
)

__all__ = [  # split_holdout is the store's: one holdout rule for dataset folders and /fit_ok use_dataset
    "DEFAULT_MM_PER_PX", "Dataset", "DatasetError", "MmPerPx", "Sample", "SeenSplit", "fit_provenance",
    "load_dataset", "relative_name", "split_holdout", "split_seen",
]

OK_FOLDERS = ("ok",)
NG_FOLDERS = ("ng", "ko")
MASK_SUFFIX = "_mask"
DEFAULT_MM_PER_PX = 0.2  # /calibrate_ng's default
MASK_LAYOUT = ("a defect's ground-truth mask goes next to its NG sample as <stem>_mask.png "
               "(ng/x.jpg + ng/x_mask.png) and OK samples need none")


class DatasetError(Exception):
    """The folder can't be used as a dataset; one sentence that says what to fix."""


@dataclasses.dataclass(frozen=True)
class Sample:
    path: Path
    label: str  # "ok" or "ng"
    mm_per_px: float | None
    shape: str | None  # the /infer ``shape`` JSON text; None: the whole image
    mask: Path | None  # ground truth, when drawn
    role_id: str | None
    roi_id: str | None


@dataclasses.dataclass(frozen=True)
class Dataset:
    root: Path
    ok: list[Sample]
    ng: list[Sample]
    skipped: list[tuple[Path, str]]  # samples left out, with the reason


def load_dataset(folder: Path, role_id: str | None = None, roi_id: str | None = None) -> Dataset:
    """The samples of ``folder`` (or of ``folder/<role>/<roi>``); with ids given, samples whose
    sidecar names another model are skipped (listed in ``skipped``)."""
    root = _dataset_root(Path(folder), role_id, roi_id)
    skipped: list[tuple[Path, str]] = []
    labelled: dict[str, list[Sample]] = {"ok": [], "ng": []}
    for label, names in (("ok", OK_FOLDERS), ("ng", NG_FOLDERS)):
        for name in names:
            for sample in _samples(root / name, label):
                other = _other_model(sample, role_id, roi_id)
                if other:
                    skipped.append((sample.path, other))
                else:
                    labelled[label].append(sample)
    return Dataset(root, labelled["ok"], labelled["ng"], skipped)


def _dataset_root(folder: Path, role_id: str | None, roi_id: str | None) -> Path:
    def has_labels(path: Path) -> bool:
        return any((path / name).is_dir() for name in OK_FOLDERS + NG_FOLDERS)

    if not folder.is_dir():
        raise DatasetError(f"Dataset folder {folder} does not exist.")
    if has_labels(folder):
        return folder
    if role_id is not None and roi_id is not None and has_labels(folder / role_id / roi_id):
        return folder / role_id / roi_id
    raise DatasetError(
        f"Dataset folder {folder} has no ok/ or ng/ (ko/) subfolder"
        + (f" (nor {role_id}/{roi_id}/ with them)" if role_id is not None else "")
        + "; point --dataset at the folder that holds them."
    )


def _samples(folder: Path, label: str) -> list[Sample]:
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES)
    masks = {p.stem[: -len(MASK_SUFFIX)]: p for p in files if p.stem.endswith(MASK_SUFFIX)}
    samples = [path for path in files if not path.stem.endswith(MASK_SUFFIX)]
    _refuse_masks_among(samples)
    return [_sample(path, label, masks.get(path.stem)) for path in samples]


def _refuse_masks_among(paths: list[Path]) -> None:
    """A DatasetError when a would-be sample is a mask: a same-stem pair (``x.jpg`` + ``x.png``, the layout
    of many public data sets), or an image with at most two grey levels (binary or single-valued)."""
    by_stem: dict[str, list[Path]] = {}
    for path in paths:
        by_stem.setdefault(path.stem.lower(), []).append(path)
    for pair in by_stem.values():
        if len(pair) > 1:
            raise DatasetError(
                f"{' and '.join(map(str, pair))} share a name, so one is probably the other's mask; "
                f"{MASK_LAYOUT}: rename or move the masks and run again."
            )
    for path in paths:
        grey = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_GRAYSCALE)  # fromfile: non-ASCII paths
        levels = 0 if grey is None else int(np.count_nonzero(np.bincount(grey.ravel(), minlength=256)))
        if 0 < levels <= 2:
            raise DatasetError(
                f"{path} has only {levels} grey level(s): it looks like a mask (or a blank frame), not a sample; "
                f"{MASK_LAYOUT}: rename or move it and run again."
            )


def _sample(path: Path, label: str, mask: Path | None) -> Sample:
    sidecar = path.with_suffix(".json")
    data: dict[str, Any] = {}
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"Sidecar {sidecar} is not readable JSON ({exc}); fix or remove it.") from None
        if not isinstance(data, dict):
            raise DatasetError(f"Sidecar {sidecar} must hold a JSON object.")
    try:
        mm_per_px = sidecar_mm_per_px(data)
    except ValueError as exc:
        raise DatasetError(f"Sidecar {sidecar} {exc}.") from None
    shape = sidecar_shape(data)
    ids = [None if data.get(key) is None else str(data[key]) for key in ("role_id", "roi_id")]
    return Sample(path, label, mm_per_px, shape, mask, *ids)


def _other_model(sample: Sample, role_id: str | None, roi_id: str | None) -> str | None:
    if role_id is not None and sample.role_id not in (None, role_id):
        return f"its sidecar names role_id={sample.role_id!r}"
    if roi_id is not None and sample.roi_id not in (None, roi_id):
        return f"its sidecar names roi_id={sample.roi_id!r}"
    return None


def relative_name(sample: Sample, root: Path) -> str:
    """How a sample is recorded in a fit's provenance: its path under the dataset root, with ``/``."""
    return sample.path.relative_to(root).as_posix()


# ---- what a fit recorded -----------------------------------------------------------------------------
def fit_provenance(root: Path, fit: list[Sample], held_out: list[Sample], rate: float, seed: int) -> dict[str, Any]:
    """What ``bdi fit`` records in the version's manifest (``dataset``): the samples fitted on and held
    out by path under the root and by content (sha256), so a renamed or re-laid-out folder is still
    recognised by later ``bdi calibrate`` and ``bdi eval`` runs."""
    return samples_provenance(root, fit, held_out, rate, seed, lambda sample: relative_name(sample, root))


@dataclasses.dataclass(frozen=True)
class SeenSplit:
    """OK samples split by whether the active memory was fitted on them."""

    unseen: list[Sample]
    fitted: list[Sample]
    matched_by: str | None  # "sha256", "file name", or None: the version records no dataset (an HTTP fit)

    def describe(self) -> str:
        """One sentence on how the split was made, for the console and the report."""
        if self.matched_by is None:
            return ("This memory version records no dataset (fitted over HTTP or by an older bdi), so whether these "
                    "OK samples were fitted on is unknown; if they were, the figures flatter the model.")
        how = ("by content (sha256)" if self.matched_by == "sha256"
               else "by file name (the version records no sha256s)")
        return (f"{len(self.fitted)} of the {len(self.unseen) + len(self.fitted)} OK samples were used to fit this "
                f"memory (recognised {how}).")


def split_seen(samples: list[Sample], root: Path, provenance: dict[str, Any]) -> SeenSplit:
    """Which of ``samples`` the memory was fitted on, per the version's provenance: by sha256 when the fit
    recorded them, else by path under the dataset root (versions fitted before sha256s were recorded)."""
    if not provenance:
        return SeenSplit(list(samples), [], None)
    fitted = fitted_by_content(samples, provenance)
    how = "sha256"
    if fitted is None:
        known = set(provenance.get("fit_files") or [])
        fitted = {sample.path for sample in samples if relative_name(sample, root) in known}
        how = "file name"
    return SeenSplit([s for s in samples if s.path not in fitted], [s for s in samples if s.path in fitted], how)


@dataclasses.dataclass(frozen=True)
class MmPerPx:
    """The one rule of ``bdi fit``, ``calibrate`` and ``eval`` for a sample's millimetres per pixel: its
    sidecar's value, else ``--mm-per-px`` (``option``), else the value recorded with the model
    (``recorded``, from ``recorded_from``), else ``DEFAULT_MM_PER_PX``."""

    option: float | None = None
    recorded: float | None = None
    recorded_from: str | None = None

    @property
    def fallback(self) -> tuple[float, str]:
        """(value, where it comes from) for samples without a sidecar value."""
        if self.option is not None:
            return self.option, "--mm-per-px"
        if self.recorded is not None:
            return self.recorded, f"recorded with the model: {self.recorded_from}"
        return DEFAULT_MM_PER_PX, "the default, nothing else gives one"

    def value(self, sample: Sample) -> float:
        return self.fallback[0] if sample.mm_per_px is None else sample.mm_per_px

    def common(self, samples: Sequence[Sample]) -> float:
        """The most common value among ``samples`` (what a fit or calibration records for the model)."""
        values = Counter(self.value(sample) for sample in samples)
        return values.most_common(1)[0][0] if values else self.fallback[0]

    def describe(self, samples: Sequence[Sample]) -> str:
        """Which value was used for how many samples, e.g. ``mm/px: 0.1 from the sidecars (12 samples);
        0.2 (--mm-per-px) for the 3 without``."""
        sidecar = Counter(sample.mm_per_px for sample in samples if sample.mm_per_px is not None)
        without = sum(sample.mm_per_px is None for sample in samples)
        parts = []
        if sidecar:
            values = ", ".join(f"{value:g}" for value in sorted(sidecar))
            parts.append(f"{values} from the sidecars ({sum(sidecar.values())} sample(s))")
        if without or not samples:
            value, source = self.fallback
            parts.append(f"{value:g} ({source}) for the {without} without a sidecar value")
        return "mm/px: " + "; ".join(parts)

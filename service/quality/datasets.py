"""The GUI's dataset folders, read for ``bdi fit``, ``bdi calibrate`` (and ``eval``).

A dataset folder holds ``ok/`` and ``ng/`` (or ``ko/``) subfolders of PNG/JPG/BMP samples, either
directly or as ``<dataset>/<role>/<roi>/``. Each sample may have a same-stem ``.json`` sidecar with
``mm_per_px``, the ``/infer`` shape (``shape_json`` as a JSON string, or ``shape`` as an object),
``role_id`` and ``roi_id``. ``<stem>_mask.png`` files are ground-truth masks of the sample
``<stem>``, never samples themselves.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
OK_FOLDERS = ("ok",)
NG_FOLDERS = ("ng", "ko")
MASK_SUFFIX = "_mask"


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


def common_mm_per_px(samples: list[Sample], default: float) -> float:
    """The sidecars' most common mm_per_px among ``samples``, else ``default``."""
    values = Counter(sample.mm_per_px for sample in samples if sample.mm_per_px is not None)
    return values.most_common(1)[0][0] if values else default


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
    return [_sample(path, label, masks.get(path.stem)) for path in files if not path.stem.endswith(MASK_SUFFIX)]


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
    mm_per_px = data.get("mm_per_px")
    if mm_per_px is not None:
        try:
            mm_per_px = float(mm_per_px)
        except (TypeError, ValueError):
            mm_per_px = math.nan
        if not math.isfinite(mm_per_px) or mm_per_px <= 0:
            raise DatasetError(f"Sidecar {sidecar} has mm_per_px={data['mm_per_px']!r}; use a number > 0.")
    shape = data.get("shape_json", data.get("shape"))
    if shape is not None and not isinstance(shape, str):
        shape = json.dumps(shape)
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


def split_holdout(samples: list[Sample], rate: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(fit, held out): a seeded ``rate`` of the samples kept out of the memory, at least one on each
    side when there are two or more. Sorted by path first, so the split ignores listing order."""
    ordered = sorted(samples, key=lambda sample: sample.path.as_posix())
    if rate <= 0 or len(ordered) < 2:
        return ordered, []
    count = min(max(1, round(len(ordered) * rate)), len(ordered) - 1)
    chosen = set(np.random.default_rng(seed).choice(len(ordered), size=count, replace=False).tolist())
    return ([s for i, s in enumerate(ordered) if i not in chosen], [s for i, s in enumerate(ordered) if i in chosen])

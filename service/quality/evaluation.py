"""Detection quality of one model on labelled samples, and a report folder a person can read.

Every number comes from ``InspectionService.infer``, the one scoring path: each sample's bytes,
``mm_per_px`` and shape text go in exactly as /infer would get them, so what is measured is what a
client sees (score, decision, regions, heatmap), never a second copy of the pipeline.

Pixel AUROC uses the raw anomaly map (``InspectionService.inspect``, the computation behind /infer,
hands it back; the heatmap PNG is stretched per image and so not comparable across images), rounded to
``PIXEL_RESOLUTION`` so a data set's pixels pool as counts. Pixels are pooled over all images, inside
each sample's shape mask; an NG sample's mask file gives the positives (any non-zero pixel), all else is
negative; OK samples are all negative; NG samples without a mask file are left out (their pixels' truth
is unknown).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..inspection import InspectionService, Upload
from .datasets import Sample, common_mm_per_px

LABELS = ("ok", "ng")
PIXEL_RESOLUTION = 1e-4  # anomaly-map units (distances in [0, 2]) per pixel-AUROC level
WORST_SHOWN = 5

# Overlay colours (BGR).
TRUTH_COLOUR = (0, 255, 0)
CONTOUR_COLOUR = (0, 0, 255)
BBOX_COLOUR = (0, 255, 255)
OK_COLOUR = (80, 170, 60)
NG_COLOUR = (60, 60, 220)
THRESHOLD_COLOUR = (160, 60, 0)


# ---- metrics (pure) ------------------------------------------------------------------------------
def auroc(values: Sequence[float], positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """Area under the ROC curve of ``values`` that carry ``positives``/``negatives`` counts each.

    Rank-based (Mann-Whitney): the share of (positive, negative) pairs where the positive scores
    higher, ties counted half. Counts let a value stand for many pixels. None without both classes.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    pos = np.asarray(positives, dtype=np.float64).ravel()
    neg = np.asarray(negatives, dtype=np.float64).ravel()
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos <= 0 or n_neg <= 0:
        return None
    levels, inverse = np.unique(values, return_inverse=True)
    pos_at = np.bincount(inverse, weights=pos, minlength=len(levels))
    neg_at = np.bincount(inverse, weights=neg, minlength=len(levels))
    neg_below = np.cumsum(neg_at) - neg_at
    return float(np.sum(pos_at * (neg_below + 0.5 * neg_at)) / (n_pos * n_neg))


def image_auroc(ok_scores: Sequence[float], ng_scores: Sequence[float]) -> float | None:
    """AUROC of NG against OK image scores; None when either list is empty."""
    n_ok, n_ng = len(ok_scores), len(ng_scores)
    return auroc([*ok_scores, *ng_scores], [0] * n_ok + [1] * n_ng, [1] * n_ok + [0] * n_ng)


def pixel_levels(
    pixel_scores: np.ndarray, roi_mask: np.ndarray, truth: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's pixels inside ``roi_mask`` as (distinct values, positives, negatives) counts.

    Compact when scores are quantised (a heatmap has at most 256 levels), so a whole data set's
    pixels can be pooled for ``auroc`` without keeping every pixel. ``truth`` None: all negative.
    """
    values, inverse = np.unique(np.asarray(pixel_scores)[roi_mask], return_inverse=True)
    inverse = inverse.ravel()
    total = np.bincount(inverse, minlength=len(values)).astype(np.float64)
    if truth is None:
        return values, np.zeros_like(total), total
    positives = np.bincount(inverse, weights=truth[roi_mask].astype(np.float64), minlength=len(values))
    return values, positives, total - positives


def pixel_auroc(levels: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float | None:
    """AUROC over the pooled ``pixel_levels`` of many images; None without positive or negative pixels."""
    levels = list(levels)
    if not levels:
        return None
    values, positives, negatives = (np.concatenate(parts) for parts in zip(*levels))
    return auroc(values, positives, negatives)


def threshold_metrics(
    ok_scores: Sequence[float], ng_scores: Sequence[float], threshold: float | None
) -> dict[str, Any]:
    """Precision, recall, F1 and the confusion matrix with NG as the positive class.

    Predicted NG iff score >= threshold, /infer's rule. Everything is None when uncalibrated;
    a ratio whose denominator is 0 is None (precision with nothing predicted NG, recall without
    NG samples); F1 is 2TP / (2TP + FP + FN), None only when that is 0/0.
    """
    if threshold is None:
        return {"precision": None, "recall": None, "f1": None, "confusion": None}
    fp = sum(score >= threshold for score in ok_scores)
    tp = sum(score >= threshold for score in ng_scores)
    tn, fn = len(ok_scores) - fp, len(ng_scores) - tp
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


# ---- evaluation ----------------------------------------------------------------------------------
def evaluate(
    service: InspectionService, role_id: str, roi_id: str, samples: Sequence[Sample], out_dir: Path,
    progress: Callable[[int, int], None] | None = None, default_mm_per_px: float = 0.2,
) -> dict[str, Any]:
    """Infer every sample through ``service``, write the report into ``out_dir``, return the summary.

    A sample without ``mm_per_px`` (no sidecar) takes the set's most common one, else
    ``default_mm_per_px`` (/calibrate_ng's default); it only scales region areas.

    ``out_dir`` gets ``summary.json`` (what this returns), ``scores.png`` (OK/NG histograms with the
    threshold), ``overlays/<stem>.png`` (heatmap, regions and the true defect outline on the sample)
    and ``README.md`` (the numbers and the worst mistakes). ``progress(done, total)`` after each sample.
    Errors of ``infer`` (not fitted, unreadable image, bad shape) propagate: they name what to fix.
    """
    if not samples:
        raise ValueError("no samples to evaluate; give at least one OK or NG image")
    out_dir = Path(out_dir)
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    fallback_mm_per_px = common_mm_per_px(list(samples), default_mm_per_px)
    items: list[dict[str, Any]] = []
    levels = []
    threshold = None
    used_names: set[str] = set()
    for done, sample in enumerate(samples, start=1):
        if sample.label not in LABELS:
            raise ValueError(f"{sample.path}: label {sample.label!r} is neither 'ok' nor 'ng'")
        path = Path(sample.path)
        data = path.read_bytes()
        mm_per_px = fallback_mm_per_px if sample.mm_per_px is None else sample.mm_per_px
        inspection = service.inspect(role_id, roi_id, mm_per_px, Upload(path.name, data), sample.shape)
        result, image, roi = inspection.response, inspection.image, inspection.mask
        threshold = result["threshold"]
        height, width = image.shape[:2]
        heatmap = cv2.imdecode(np.frombuffer(base64.b64decode(result["heatmap_png_base64"]), np.uint8),
                               cv2.IMREAD_GRAYSCALE)
        truth = _read_truth(sample.mask, (height, width)) if sample.label == "ng" and sample.mask else None
        if sample.label == "ok" or truth is not None:
            quantised = np.round(inspection.anomaly_map / PIXEL_RESOLUTION).astype(np.int64)
            levels.append(pixel_levels(quantised, roi, truth))
        name = _unique_name(path.stem, used_names)
        _write_png(out_dir / "overlays" / name, draw_overlay(image, heatmap, roi, result["regions"], truth,
                                                             _caption(sample.label, result)))
        items.append({
            "file": str(path),
            "label": sample.label,
            "score": result["score"],
            "predicted": result["decision"],
            "n_regions": len(result["regions"]),
            "overlay": f"overlays/{name}",
        })
        if progress is not None:
            progress(done, len(samples))
    ok_scores = [item["score"] for item in items if item["label"] == "ok"]
    ng_scores = [item["score"] for item in items if item["label"] == "ng"]
    summary = {
        "role_id": role_id,
        "roi_id": roi_id,
        "n_ok": len(ok_scores),
        "n_ng": len(ng_scores),
        "image_auroc": image_auroc(ok_scores, ng_scores),
        "pixel_auroc": pixel_auroc(levels),
        "threshold": threshold,
        **threshold_metrics(ok_scores, ng_scores, threshold),
        "items": items,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_png(out_dir / "scores.png", draw_score_histogram(ok_scores, ng_scores, threshold))
    (out_dir / "README.md").write_text(report_markdown(summary), encoding="utf-8")
    return summary


def _read_truth(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask as bool (any non-zero pixel is defect), the sample's size or an error."""
    mask = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_GRAYSCALE)  # fromfile: non-ASCII paths
    if mask is None:
        raise ValueError(f"{path}: the ground-truth mask is not a readable image")
    if mask.shape != size:
        raise ValueError(f"{path}: the mask is {mask.shape[1]}x{mask.shape[0]}, its sample {size[1]}x{size[0]}")
    return mask > 0


def _unique_name(stem: str, used: set[str]) -> str:
    """``<stem>.png``, or ``<stem>-2.png``... when an OK and an NG sample share a stem."""
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name


def _caption(label: str, result: dict[str, Any]) -> tuple[str, str]:
    threshold = "uncalibrated" if result["threshold"] is None else f"thr {result['threshold']:.4f}"
    return (f"{label.upper()} {result['score']:.4f} -> {result['decision'] or '?'}",
            f"{threshold}, {len(result['regions'])} regions")


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    path.write_bytes(data.tobytes())


# ---- drawing -------------------------------------------------------------------------------------
def draw_overlay(
    image: np.ndarray, heatmap: np.ndarray, roi_mask: np.ndarray, regions: list[dict[str, Any]],
    truth: np.ndarray | None, caption: Sequence[str],
) -> np.ndarray:
    """The sample with the heatmap blended inside its mask, the true defect outline (green), the
    regions' contours (red) and boxes (yellow) on top, and the caption lines in a strip below.

    The image keeps its pixel coordinates (the strip is appended under it), so the overlay can be
    compared with the regions' numbers directly.
    """
    height, width = image.shape[:2]
    line = max(1, round(min(height, width) / 256))
    blended = cv2.addWeighted(image, 0.55, cv2.applyColorMap(heatmap, cv2.COLORMAP_JET), 0.45, 0)
    out = image.copy()
    out[roi_mask] = blended[roi_mask]
    if truth is not None:
        contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, TRUTH_COLOUR, line)
    for region in regions:
        cv2.polylines(out, [np.asarray(region["contour"], np.int32).reshape(-1, 1, 2)], True, CONTOUR_COLOUR, line)
    for region in regions:
        x, y, w, h = region["bbox"]
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), BBOX_COLOUR, line)
    font = cv2.FONT_HERSHEY_SIMPLEX
    widest = max(cv2.getTextSize(text, font, 1.0, 1)[0][0] for text in caption)
    scale = min(0.5, (width - 6) / widest)  # shrink to fit a small image rather than cut the text
    step = int(30 * scale) + 4
    strip = np.zeros((step * len(caption) + 4, width, 3), np.uint8)
    for k, text in enumerate(caption, start=1):
        cv2.putText(strip, text, (3, step * k), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([out, strip])


def draw_score_histogram(
    ok_scores: Sequence[float], ng_scores: Sequence[float], threshold: float | None,
    width: int = 800, height: int = 420, bins: int = 30,
) -> np.ndarray:
    """OK and NG score histograms over one axis, translucent so overlaps show, with the threshold line."""
    left, right, top, bottom = 55, 20, 45, 50
    canvas = np.full((height, width, 3), 255, np.uint8)
    values = [*ok_scores, *ng_scores, *([] if threshold is None else [threshold])]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = 0.05 * (high - low) or 0.05 * max(abs(high), 1e-3)
    low, high = low - pad, high + pad
    edges = np.linspace(low, high, bins + 1)
    counts = [np.histogram(scores, edges)[0] for scores in (ok_scores, ng_scores)]
    peak = max(1, *(int(c.max()) for c in counts))
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(value: float) -> int:
        return left + round(float(value - low) / (high - low) * plot_w)

    for count, colour in zip(counts, (OK_COLOUR, NG_COLOUR)):
        layer = canvas.copy()
        for k, n in enumerate(count):
            if n:
                y = top + plot_h - round(int(n) / peak * plot_h)
                cv2.rectangle(layer, (x_of(edges[k]), y), (x_of(edges[k + 1]) - 1, top + plot_h), colour, -1)
        canvas = cv2.addWeighted(layer, 0.6, canvas, 0.4, 0)
    black = (0, 0, 0)
    cv2.line(canvas, (left, top + plot_h), (left + plot_w, top + plot_h), black, 1)
    cv2.line(canvas, (left, top), (left, top + plot_h), black, 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for value in np.linspace(low, high, 6):
        x = x_of(value)
        cv2.line(canvas, (x, top + plot_h), (x, top + plot_h + 5), black, 1)
        cv2.putText(canvas, f"{value:.3g}", (x - 18, top + plot_h + 22), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(canvas, "score", (left + plot_w // 2 - 20, height - 8), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(canvas, str(peak), (8, top + 5), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(canvas, "0", (30, top + plot_h), font, 0.45, black, 1, cv2.LINE_AA)
    legend = [(f"OK n={len(ok_scores)}", OK_COLOUR), (f"NG n={len(ng_scores)}", NG_COLOUR)]
    if threshold is not None:
        x = x_of(threshold)
        for y in range(top, top + plot_h, 8):  # dashed
            cv2.line(canvas, (x, y), (x, min(y + 4, top + plot_h)), THRESHOLD_COLOUR, 2)
        legend.append((f"threshold {threshold:.4g}", THRESHOLD_COLOUR))
    else:
        legend.append(("uncalibrated: no threshold", black))
    x = left
    for text, colour in legend:
        cv2.rectangle(canvas, (x, 14), (x + 14, 28), colour, -1)
        cv2.putText(canvas, text, (x + 20, 27), font, 0.5, black, 1, cv2.LINE_AA)
        x += 30 + cv2.getTextSize(text, font, 0.5, 1)[0][0]
    return canvas


# ---- report --------------------------------------------------------------------------------------
def report_markdown(summary: dict[str, Any]) -> str:
    """The README of a report folder: the numbers, then the samples most likely to be wrong."""
    confusion = summary["confusion"]
    items = summary["items"]
    ok_items = sorted((i for i in items if i["label"] == "ok"), key=lambda i: -i["score"])[:WORST_SHOWN]
    ng_items = sorted((i for i in items if i["label"] == "ng"), key=lambda i: i["score"])[:WORST_SHOWN]
    lines = [
        f"# Evaluation of {summary['role_id']} / {summary['roi_id']}",
        "",
        "| OK | NG | image AUROC | pixel AUROC | threshold | precision | recall | F1 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| " + " | ".join([str(summary["n_ok"]), str(summary["n_ng"])] + [
            _fmt(summary[key]) for key in ("image_auroc", "pixel_auroc", "threshold", "precision", "recall", "f1")
        ]) + " |",
        "",
    ]
    if confusion is None:
        lines += ["No calibration is active: no threshold, so no decisions, precision, recall or F1.", ""]
    else:
        lines += [
            "Confusion at the threshold (NG iff score >= threshold, as /infer decides):",
            "",
            "| | predicted OK | predicted NG |",
            "|---|---:|---:|",
            f"| OK | {confusion['tn']} | {confusion['fp']} |",
            f"| NG | {confusion['fn']} | {confusion['tp']} |",
            "",
        ]
    for title, chosen in (
        ("Worst false positives: the highest-scoring OK samples", ok_items),
        ("Worst false negatives: the lowest-scoring NG samples", ng_items),
    ):
        lines += [f"## {title}", ""]
        if not chosen:
            lines += ["None in this set.", ""]
            continue
        lines += ["| file | score | decision | regions | overlay |", "|---|---:|---|---:|---|"]
        lines += [
            f"| {i['file']} | {i['score']:.4f} | {i['predicted'] or '-'} | {i['n_regions']} "
            f"| [{i['overlay']}]({i['overlay']}) |"
            for i in chosen
        ]
        lines.append("")
    lines += [
        (
            "`scores.png`: OK and NG score histograms with the threshold. `overlays/`: each sample with its heatmap, "
            "regions (red outline, yellow box) and true defect (green). Pixel AUROC ranks the raw anomaly map's "
            "pixels inside each sample's shape; see service/evaluation.py."
        ),
        "",
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"

"""Detection quality of one model on labelled samples, and a report folder a person can read.

Every number comes from ``InspectionService.inspect``, the one scoring path behind /infer: each
sample's bytes, ``mm_per_px`` and shape text go in exactly as /infer would get them, so what is measured
is what a client sees (score, decision, regions), never a second copy of the pipeline.

The headline (the report's README table, ``summary.json``'s top-level figures, ``scores.png``) is on
samples the memory was not fitted on: a memory scores its own images low, so pooling them flatters the
model. The caller names the fitted ones (``fitted``, from the version's provenance); they are left out,
or with ``include_fitted`` scored and reported in a section of their own.

Pixel AUROC uses the raw anomaly map (the heatmap PNG of /infer is stretched per image and so not
comparable across images), rounded to ``PIXEL_RESOLUTION`` so a data set's pixels pool as counts. Pixels
are pooled over all images, inside each sample's shape mask; an NG sample's mask file gives the
positives (any non-zero pixel), all else is negative; OK samples are all negative; NG samples without a
mask file are left out (their pixels' truth is unknown).

Overlays share one colour scale over the whole report, anchored at the threshold (``plots.HeatScale``),
so a clean part looks cool next to a broken one; ``overlay_scale="image"`` stretches each image to itself
instead. Between scoring and drawing, each map is kept at most ``KEPT_MAP_SIDE`` pixels on its long side
(float16): it comes from a 32×32 token grid at input 448, so that keeps 8 pixels per token at least.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core import InspectionService, RequestContext, Upload
from ..pipeline import decode_image, parse_shape, shape_mask
from .datasets import MmPerPx, Sample
from .plots import HeatScale, save_png, score_histogram

LABELS = ("ok", "ng")
OVERLAY_SCALES = ("report", "image")
PIXEL_RESOLUTION = 1e-4  # anomaly-map units (distances in [0, 2]) per pixel-AUROC level
KEPT_MAP_SIDE = 256
WORST_SHOWN = 5

# Overlay colours (BGR): absent from the heat colour map (inferno), each drawn over a dark edge.
TRUTH_COLOUR = (0, 255, 0)
CONTOUR_COLOUR = (255, 255, 0)
BBOX_COLOUR = (255, 255, 0)
EDGE_COLOUR = (0, 0, 0)


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
    NG samples); F1 is 2TP / (2TP + FP + FN), None only when that is 0/0. Without OK samples precision
    and F1 are None too: no false positive could happen, so they would only flatter.
    """
    if threshold is None:
        return {"precision": None, "recall": None, "f1": None, "confusion": None}
    fp = sum(score >= threshold for score in ok_scores)
    tp = sum(score >= threshold for score in ng_scores)
    tn, fn = len(ok_scores) - fp, len(ng_scores) - tp
    measurable = len(ok_scores) > 0
    return {
        "precision": _ratio(tp, tp + fp) if measurable else None,
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn) if measurable else None,
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def overlap_warning(calibration: dict[str, Any], ng_scores: Sequence[float]) -> str | None:
    """A sentence when a calibration's NG scores overlap its OK scores (``p5_ng <= p_ok``, where the rule
    takes 1.02 × p_ok): how many NG samples score below the new threshold, i.e. would pass as OK."""
    p_ng, p_ok = calibration["p5_ng"], calibration["p99_ok"]
    if p_ng is None or p_ng > p_ok:
        return None
    threshold = calibration["threshold"]
    missed = sum(score < threshold for score in ng_scores)
    return (
        f"NG and OK scores overlap (5th percentile of NG {p_ng:.4g} <= percentile {calibration['score_percentile']} "
        f"of OK {p_ok:.4g}), so the threshold is 1.02 x the OK percentile, {threshold:.4g}: {missed} of the "
        f"{len(ng_scores)} NG samples score below it and would pass as OK. The memory does not separate these "
        "defects from normal variation at this threshold; check the NG samples' overlays with `bdi eval`, and "
        "try more or cleaner OK images, a shape mask that leaves out the background, or a larger input size."
    )


# ---- evaluation ----------------------------------------------------------------------------------
@dataclasses.dataclass
class _Scored:
    """One inferred sample, kept between scoring and drawing (the map small, see ``KEPT_MAP_SIDE``)."""

    sample: Sample
    item: dict[str, Any]
    regions: list[dict[str, Any]]
    caption: tuple[str, str]
    kept_map: np.ndarray
    own_scale: HeatScale  # the image's own stretch
    low: float  # 1st percentile of the map inside the shape
    high: float  # its maximum there


def evaluate(
    service: InspectionService, role_id: str, roi_id: str, samples: Sequence[Sample], out_dir: Path, *,
    fitted: Collection[Path] = (), include_fitted: bool = False, seen_note: str | None = None,
    mm_per_px: MmPerPx | None = None, overlay_scale: str = "report",
    progress: Callable[[int, int], None] | None = None, recipe_id: str | None = None,
    context: RequestContext | None = None,
) -> dict[str, Any]:
    """Infer the samples through ``service``, write the report into ``out_dir``, return the summary.

    ``fitted``: paths of OK samples the memory was fitted on; left out of every figure (and not scored)
    unless ``include_fitted``, which reports them separately. ``seen_note`` says how they were
    recognised. ``mm_per_px`` gives each sample's value (only region areas depend on it; None: sidecars, else
    the default).

    ``out_dir`` gets ``summary.json`` (what this returns), ``scores.png`` (OK/NG histograms with the
    threshold), ``colour_scale.png`` (the overlays' shared scale), ``overlays/<stem>.png`` (heatmap,
    regions and the true defect outline on the sample) and ``README.md``. ``progress(done, total)``
    after each scored sample. ``context`` goes with each inspection (``record=True``: into the inspection
    records). Errors of ``inspect`` (not fitted, unreadable image, bad shape) propagate: they name what to fix.
    """
    if overlay_scale not in OVERLAY_SCALES:
        raise ValueError(f"overlay_scale {overlay_scale!r} is not one of {', '.join(OVERLAY_SCALES)}")
    for sample in samples:
        if sample.label not in LABELS:
            raise ValueError(f"{sample.path}: label {sample.label!r} is neither 'ok' nor 'ng'")
    fitted = set(fitted)
    mm_per_px = mm_per_px or MmPerPx()
    n_fitted = sum(sample.path in fitted for sample in samples)
    scored = [s for s in samples if include_fitted or s.path not in fitted]
    if not scored:
        raise ValueError("no samples to evaluate; give at least one OK or NG image the memory was not fitted on "
                         "(or --include-fitted)")
    out_dir = Path(out_dir)
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    results, levels, threshold = _score_all(
        service, role_id, roi_id, scored, fitted, mm_per_px, progress, recipe_id, context or RequestContext()
    )
    scale = HeatScale.for_report([r.low for r in results], [r.high for r in results], threshold)
    for scored_sample in results:
        _write_png(out_dir / scored_sample.item["overlay"],
                   _overlay(service, scored_sample, None if overlay_scale == "image" else scale))
    items = [r.item for r in results]

    def scores(label: str, was_fitted: bool) -> list[float]:
        return [i["score"] for i in items if i["label"] == label and i["fitted"] == was_fitted]

    ok_scores, ng_scores, fitted_scores = scores("ok", False), scores("ng", False), scores("ok", True)
    summary: dict[str, Any] = {
        "role_id": role_id,
        "roi_id": roi_id,
        **_figures(ok_scores, ng_scores, threshold, levels["ok"] + levels["ng"]),
        "headline": _headline(len(ok_scores), len(ng_scores), n_fitted, include_fitted, seen_note),
        "n_ok_fitted": n_fitted,
        "fitted_ok": (_figures(fitted_scores, ng_scores, threshold, levels["fitted"] + levels["ng"])
                      if include_fitted and n_fitted else None),
        "mm_per_px": mm_per_px.describe([r.sample for r in results]),
        "overlay_scale": ({"mode": "image"} if overlay_scale == "image"
                          else {"mode": "report", **dataclasses.asdict(scale)}),
        "ng_with_truth": sum(r.sample.label == "ng" and r.sample.mask is not None for r in results),
        "items": items,
    }
    _write_report(out_dir, summary, ok_scores, ng_scores, fitted_scores, threshold,
                  scale if overlay_scale == "report" else None)
    return summary


def _score_all(
    service: InspectionService, role_id: str, roi_id: str, scored: list[Sample], fitted: set[Path],
    mm_per_px: MmPerPx, progress: Callable[[int, int], None] | None, recipe_id: str | None,
    context: RequestContext,
) -> tuple[list[_Scored], dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]], float | None]:
    """Inspect each sample as /infer does; its item, regions, map and pixel levels (OK, NG or fitted), and the
    threshold the model answered with."""
    levels: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"ok": [], "ng": [], "fitted": []}
    results: list[_Scored] = []
    threshold = None
    used_names: set[str] = set()
    for done, sample in enumerate(scored, start=1):
        is_fitted = sample.path in fitted
        value = mm_per_px.value(sample)
        inspection = service.inspect(role_id, roi_id, value, Upload(sample.path.name, sample.path.read_bytes()),
                                     sample.shape, context, recipe_id=recipe_id)
        result, amap, roi = inspection.response, inspection.anomaly_map, inspection.mask
        threshold = result["threshold"]
        truth = _read_truth(sample.mask, amap.shape) if sample.label == "ng" and sample.mask else None
        if sample.label == "ok" or truth is not None:
            quantised = np.round(amap / PIXEL_RESOLUTION).astype(np.int64)
            levels["fitted" if is_fitted else sample.label].append(pixel_levels(quantised, roi, truth))
        inside = amap[roi]
        results.append(_Scored(
            sample,
            {
                "file": str(sample.path),
                "label": sample.label,
                "fitted": is_fitted,
                "score": result["score"],
                "predicted": result["decision"],
                "n_regions": len(result["regions"]),
                "mm_per_px": value,
                "overlay": f"overlays/{_unique_name(sample.path.stem, used_names)}",
            },
            result["regions"], _caption(sample, is_fitted, result), _keep(amap), HeatScale.stretched(inside),
            float(np.percentile(inside, 1)), float(inside.max()),
        ))
        if progress is not None:
            progress(done, len(scored))
    return results, levels, threshold


def _write_report(
    out_dir: Path, summary: dict[str, Any], ok_scores: list[float], ng_scores: list[float],
    fitted_scores: list[float], threshold: float | None, scale: HeatScale | None,
) -> None:
    """summary.json, the score histogram, the shared colour scale (None: each overlay has its own) and the
    report's README."""
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    title = "Image scores of samples the memory was not fitted on"
    if not ok_scores:
        title += " (no such OK sample)"
    if fitted_scores:
        title += "; grey outline: OK samples it was fitted on"
    save_png(score_histogram(ok_scores, ng_scores, threshold, fitted_ok_scores=fitted_scores, title=title),
             out_dir / "scores.png")
    if scale is not None:
        save_png(scale.colour_bar(), out_dir / "colour_scale.png")
    (out_dir / "README.md").write_text(report_markdown(summary), encoding="utf-8")


def _figures(ok_scores: list[float], ng_scores: list[float], threshold: float | None,
             levels: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    return {
        "n_ok": len(ok_scores),
        "n_ng": len(ng_scores),
        "image_auroc": image_auroc(ok_scores, ng_scores),
        "pixel_auroc": pixel_auroc(levels),
        "threshold": threshold,
        **threshold_metrics(ok_scores, ng_scores, threshold),
    }


def _headline(n_ok: int, n_ng: int, n_fitted: int, include_fitted: bool, seen_note: str | None) -> str:
    """What the headline figures are computed on, in one or two sentences."""
    text = f"Figures on {n_ok} OK and {n_ng} NG sample(s) the memory was not fitted on."
    if n_fitted:
        text += (f" The {n_fitted} OK sample(s) it was fitted on are "
                 + ("reported separately below." if include_fitted else "left out (--include-fitted reports them)."))
    if not n_ok:
        text += (" No unseen OK sample: image AUROC, precision, F1 and false positives can't be measured; add OK "
                 "images the memory has not seen, or refit with `bdi fit --holdout 0.3`.")
    if seen_note and not n_fitted:
        text += " " + seen_note
    return text


def _keep(amap: np.ndarray) -> np.ndarray:
    """The map as kept until drawing: float16, at most ``KEPT_MAP_SIDE`` on its long side."""
    height, width = amap.shape
    factor = KEPT_MAP_SIDE / max(height, width)
    if factor < 1:
        amap = cv2.resize(amap, (max(1, round(width * factor)), max(1, round(height * factor))),
                          interpolation=cv2.INTER_AREA)
    return amap.astype(np.float16)


def _overlay(service: InspectionService, scored: _Scored, scale: HeatScale | None) -> np.ndarray:
    """The overlay of one scored sample, on ``scale`` (None: the image's own stretch); the image and its
    shape mask are decoded again rather than kept."""
    sample = scored.sample
    image = decode_image(sample.path.read_bytes(), sample.path.name, service.settings.max_image_pixels)
    height, width = image.shape[:2]
    roi = shape_mask(parse_shape(sample.shape), width, height)
    amap = cv2.resize(scored.kept_map.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    truth = _read_truth(sample.mask, (height, width)) if sample.label == "ng" and sample.mask else None
    caption = (scored.caption[0], f"{scored.caption[1]}, {'report' if scale else 'own'} colour scale")
    return draw_overlay(image, (scale or scored.own_scale).colours_bgr(amap), roi, scored.regions, truth, caption)


def _caption(sample: Sample, fitted: bool, result: dict[str, Any]) -> tuple[str, str]:
    label = sample.label.upper() + (" (fitted on)" if fitted else "")
    threshold = "uncalibrated" if result["threshold"] is None else f"thr {result['threshold']:.4f}"
    return (f"{label} {result['score']:.4f} -> {result['decision'] or '?'}",
            f"{threshold}, {len(result['regions'])} regions")


def _read_truth(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask as bool (any non-zero pixel is defect), the sample's size or an error."""
    mask = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_GRAYSCALE)  # fromfile: non-ASCII paths
    if mask is None:
        raise ValueError(f"{path}: the ground-truth mask is not a readable image")
    if mask.shape != tuple(size):
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


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    path.write_bytes(data.tobytes())


# ---- drawing -------------------------------------------------------------------------------------
def draw_overlay(
    image: np.ndarray, heat_bgr: np.ndarray, roi_mask: np.ndarray, regions: list[dict[str, Any]],
    truth: np.ndarray | None, caption: Sequence[str],
) -> np.ndarray:
    """The sample with the heat colours blended inside its mask, the true defect outline (green), the
    regions' contours and boxes (cyan) on top, each line over a dark edge so it shows on any colour, and
    the caption lines in a strip below.

    The image keeps its pixel coordinates (the strip is appended under it), so the overlay can be
    compared with the regions' numbers directly.
    """
    height, width = image.shape[:2]
    line = max(1, round(min(height, width) / 256))
    blended = cv2.addWeighted(image, 0.45, heat_bgr, 0.55, 0)
    out = image.copy()
    out[roi_mask] = blended[roi_mask]
    truth_outline = []
    if truth is not None:
        truth_outline, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contours = [np.asarray(region["contour"], np.int32).reshape(-1, 1, 2) for region in regions]
    boxes = [region["bbox"] for region in regions]
    for thickness, colours in ((line + 2, (EDGE_COLOUR,) * 3), (line, (TRUTH_COLOUR, CONTOUR_COLOUR, BBOX_COLOUR))):
        cv2.drawContours(out, truth_outline, -1, colours[0], thickness)
        cv2.polylines(out, contours, True, colours[1], thickness)
        for x, y, w, h in boxes:
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colours[2], thickness)
    font = cv2.FONT_HERSHEY_SIMPLEX
    widest = max(cv2.getTextSize(text, font, 1.0, 1)[0][0] for text in caption)
    scale = min(0.5, (width - 6) / widest)  # shrink to fit a small image rather than cut the text
    step = int(30 * scale) + 4
    strip = np.zeros((step * len(caption) + 4, width, 3), np.uint8)
    for k, text in enumerate(caption, start=1):
        cv2.putText(strip, text, (3, step * k), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([out, strip])


# ---- report --------------------------------------------------------------------------------------
def report_markdown(summary: dict[str, Any]) -> str:
    """The README of a report folder: the headline on unseen samples, the real mistakes, then the
    samples the memory was fitted on, apart."""
    items = [item for item in summary["items"] if not item["fitted"]]
    lines = [
        f"# Evaluation of {summary['role_id']} / {summary['roi_id']}",
        "",
        summary["headline"],
        "",
        *_figures_table(summary),
        "",
    ]
    threshold, confusion = summary["threshold"], summary["confusion"]
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
    ok_items = sorted((i for i in items if i["label"] == "ok"), key=lambda i: -i["score"])
    ng_items = sorted((i for i in items if i["label"] == "ng"), key=lambda i: i["score"])
    if threshold is None:
        lines += _listed("Highest-scoring OK samples", ok_items[:WORST_SHOWN], "No OK sample in this set.")
        lines += _listed("Lowest-scoring NG samples", ng_items[:WORST_SHOWN], "No NG sample in this set.")
    else:
        false_positives = [i for i in ok_items if i["predicted"] == "ng"]
        false_negatives = [i for i in ng_items if i["predicted"] == "ok"]
        lines += _listed(f"False positives: OK samples at or above the threshold ({len(false_positives)})",
                         false_positives[:WORST_SHOWN], _closest(ok_items, threshold, "OK", "below"))
        lines += _listed(f"False negatives: NG samples below the threshold ({len(false_negatives)})",
                         false_negatives[:WORST_SHOWN], _closest(ng_items, threshold, "NG", "above"))
    fitted = summary.get("fitted_ok")
    if fitted is not None:
        lines += [
            "## OK samples the memory was fitted on (not in the figures above)",
            "",
            ("A memory tends to score its own images low (it holds their patches, or a coreset of them), so these "
             "figures usually flatter the model; they are here for comparison, against the same NG samples."),
            "",
            *_figures_table(fitted),
            "",
        ]
    scale = summary["overlay_scale"]
    colours = ("one colour scale for every overlay, anchored at the threshold: see `colour_scale.png`"
               if scale["mode"] == "report" else "each image stretched to its own 1st..99th percentile, so colours "
               "are not comparable between images")
    truth = ("the true defect (green) where an NG sample has a ground-truth mask" if summary["ng_with_truth"]
             else "no true defect outline: no NG sample has a ground-truth mask (`<stem>_mask.png`), so pixel AUROC "
             "is not computed either")
    lines += [
        (f"`scores.png`: OK and NG score histograms with the threshold. `overlays/`: each sample with its heatmap "
         f"({colours}), the regions /infer reports (cyan outline and box) and {truth}. Pixel AUROC "
         "ranks the raw anomaly map's pixels inside each sample's shape. " + summary["mm_per_px"] + "."),
        "",
    ]
    return "\n".join(lines)


def _figures_table(figures: dict[str, Any]) -> list[str]:
    return [
        "| OK | NG | image AUROC | pixel AUROC | threshold | precision | recall | F1 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| " + " | ".join([str(figures["n_ok"]), str(figures["n_ng"])] + [
            _fmt(figures[key]) for key in ("image_auroc", "pixel_auroc", "threshold", "precision", "recall", "f1")
        ]) + " |",
    ]


def _listed(title: str, chosen: list[dict[str, Any]], none: str) -> list[str]:
    lines = [f"## {title}", ""]
    if not chosen:
        return lines + [none, ""]
    lines += ["| file | score | decision | regions | overlay |", "|---|---:|---|---:|---|"]
    lines += [f"| {i['file']} | {i['score']:.4f} | {i['predicted'] or '-'} | {i['n_regions']} "
              f"| [{i['overlay']}]({i['overlay']}) |" for i in chosen]
    return lines + [""]


def _closest(ranked: list[dict[str, Any]], threshold: float, label: str, side: str) -> str:
    """The sentence for an empty mistakes list: none, and the closest call."""
    if not ranked:
        return f"No {label} sample in this set."
    nearest = ranked[0]
    return (f"None. The closest {label} sample, {nearest['file']}, scored {nearest['score']:.4f}, "
            f"{abs(threshold - nearest['score']):.4f} {side} the threshold.")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"

"""``bdi fit``, ``bdi calibrate`` and ``bdi eval``: the service's own fit / infer / calibrate path, fed
from the GUI's dataset folders instead of HTTP, or, without ``--dataset``, from the samples the newer GUI
stored in the service (``--recipe`` names its namespace)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import ServiceError
from ..quality import Dataset, MmPerPx, Sample, fit_provenance, load_dataset, split_holdout, split_seen
from ..settings import Settings
from ..storage import DatasetStore, ModelState, ModelStore, sha256_file
from .common import (
    EXIT_USAGE,
    CliError,
    cli_context,
    model_label,
    models_dir_option,
    print_table,
    recipe_option,
    rich_console,
)

if TYPE_CHECKING:  # the service pulls in torch; admin commands never import it
    from ..core import InspectionService, Upload

F = TypeVar("F", bound=Callable[..., Any])


def _service(models_dir: Path | None) -> InspectionService:
    """The InspectionService of the current settings (loads the backbone), started like the app's."""
    from ..core import InspectionService

    service = InspectionService(Settings.load(models_dir=models_dir))
    click.get_current_context().call_on_close(service.close)
    service.start()
    return service


def record_option(command: F) -> F:
    return click.option(
        "--record", is_flag=True,
        help="Keep each scored sample in the inspection records (source cli), as /infer does; off by default so "
        "that test sets do not mix with production.",
    )(command)


def _progress() -> Progress:
    """Images done of the total, time spent and the estimated time left (from the pace so far)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("left"), TimeRemainingColumn(), console=rich_console(stderr=True))


def _dataset(dataset_dir: Path | None, role_id: str, roi_id: str, recipe_id: str, models_dir: Path | None) -> Dataset:
    """The dataset folder given, else the stored samples of (recipe, role, roi)."""
    if dataset_dir is None:
        settings = Settings.load(models_dir=models_dir)
        dataset_dir = DatasetStore(ModelStore(settings.models_dir)).folder(recipe_id, role_id, roi_id)
        if dataset_dir is None:
            raise CliError(f"There are no stored samples of {model_label(recipe_id, role_id, roi_id)} in "
                           f"{settings.models_dir}; pass --dataset DIR, or store some (`bdi datasets import`).",
                           EXIT_USAGE)
    dataset = load_dataset(dataset_dir, role_id, roi_id)
    for path, reason in dataset.skipped:
        rich_console(stderr=True).print(f"skipped {path}: {reason}")
    if not dataset.ok:
        raise CliError(f"Dataset {dataset.root} has no OK samples (PNG/JPG/BMP in ok/).", EXIT_USAGE)
    return dataset


def _fitted_state(service: InspectionService, role_id: str, roi_id: str, recipe_id: str) -> ModelState:
    state = service.model_state(role_id, roi_id, recipe_id=recipe_id)
    if state is None or state.active is None:
        raise CliError(f"There is no memory for {model_label(recipe_id, role_id, roi_id)}; "
                       f"run `bdi fit {role_id} {roi_id} --dataset DIR` first.")
    return state


def _provenance(service: InspectionService, state: ModelState) -> dict[str, Any]:
    """What the active version recorded about the dataset it was fitted on (empty for HTTP fits)."""
    manifest = service.store.version_files(service.store.root / state.folder, state.active_version).manifest
    return manifest.get("dataset") or {}


def _mm_per_px(service: InspectionService, state: ModelState | None, option: float | None) -> MmPerPx:
    """The mm/px rule with the model's recorded value: the active calibration's (the threshold's
    ``area_mm2_thr`` was set in mm² with it, and it is the latest word), else the one the active version
    was fitted with (kept in its memory file's metadata)."""
    if state is not None and state.calibration is not None and state.calibration.values.get("mm_per_px"):
        return MmPerPx(option, state.calibration.values["mm_per_px"], "the active calibration")
    if state is not None and state.active is not None:
        fitted = service.store.load_memory(service.store.root / state.folder, state.active_version).metadata
        if fitted.get("mm_per_px"):
            return MmPerPx(option, fitted["mm_per_px"], f"the fit of version {state.active_version}")
    return MmPerPx(option)


def _upload(sample: Sample) -> Upload:
    from ..core import Upload

    return Upload(sample.path.name, sample.path.read_bytes())


@click.command()
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), default=None,
              help="Folder with ok/ (and ng/) samples, or with <role>/<roi>/ok/ [the stored samples].")
@click.option("--memory-fit", is_flag=True, help="Keep every patch (coreset rate 1.0).")
@click.option("--mm-per-px", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Millimetres per pixel of samples without a sidecar value [the model's recorded value, else 0.2].")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="Fraction of the OK samples kept out of the memory (seeded) for `bdi calibrate` to score.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the holdout split.")
@click.option("--append", is_flag=True,
              help="Grow the active memory with these OK samples instead of fitting a new one (no earlier image "
                   "is needed); the calibration stays but is marked stale. The samples the fit held out stay out.")
@click.option("--all", "append_all", is_flag=True,
              help="With --append: append the samples the fit held out for calibration too.")
@recipe_option
@models_dir_option
def fit(role_id: str, roi_id: str, dataset_dir: Path | None, memory_fit: bool, mm_per_px: float | None,
        holdout: float, seed: int, append: bool, append_all: bool, recipe_id: str, models_dir: Path | None) -> None:
    """Fit the memory of ROLE_ID / ROI_ID from the OK samples of a dataset folder.

    With --holdout the held-out samples are recorded with the version, and `bdi calibrate` on the same
    dataset scores those instead of the images the memory was built from. With --append every OK sample
    grows the active memory (a new version whose parent is the active one), except the samples its fit held
    out for calibration, unless --all.
    """

    if append and holdout:
        raise CliError("--holdout splits a fit's samples; an append adds every sample it is given. Leave out "
                       "--holdout (keep the samples to calibrate on in another folder).", EXIT_USAGE)
    if append_all and not append:
        raise CliError("--all says which samples an append takes; use it with --append.", EXIT_USAGE)
    dataset = _dataset(dataset_dir, role_id, roi_id, recipe_id, models_dir)
    fit_samples, held_out = split_holdout(dataset.ok, holdout, seed)
    service = _service(models_dir)
    current = service.model_state(role_id, roi_id, recipe_id=recipe_id)
    if append and not append_all and current is not None and current.active is not None:
        fit_samples, held_out = _outside_holdout(dataset.ok, _provenance(service, current))
    rule = _mm_per_px(service, current, mm_per_px)
    mm_per_px = rule.common(fit_samples)
    rich_console(stderr=True).print(f"{rule.describe(fit_samples)}; the version records {mm_per_px:g}.")
    provenance = fit_provenance(dataset.root, fit_samples, held_out, holdout, seed)
    with _progress() as progress:
        uploads = [_upload(sample) for sample in progress.track(fit_samples, description="Reading OK samples")]
        task = progress.add_task("Extracting features", total=len(uploads))

        def extracted(done: int, total: int) -> None:
            progress.update(task, completed=done,
                            description="Extracting features" if done < total else "Building the memory")

        context = cli_context()
        if append:
            result = service.append(role_id, roi_id, mm_per_px, uploads, memory_fit=memory_fit, context=context,
                                    progress=extracted, recipe_id=recipe_id)
        else:
            result = service.fit(role_id, roi_id, mm_per_px, uploads, memory_fit=memory_fit, context=context,
                                 provenance=provenance, progress=extracted, recipe_id=recipe_id)
    state = service.model_state(role_id, roi_id, recipe_id=recipe_id)
    grown = result.pop("append", {})
    print_table(
        f"{'Appended to' if append else 'Fitted'} {model_label(recipe_id, role_id, roi_id)}: version "
        f"{state.active_version if state else '-'} ({len(uploads)} images, {len(held_out)} held out, "
        f"{result['n_embeddings']} patches, coreset {result['coreset_size']})", ("field", "value"),
        [("images", len(uploads)), ("held out", len(held_out)), ("mm_per_px", mm_per_px), *result.items(),
         *((f"append.{key}", value) for key, value in grown.items())],
    )


@click.command()
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), default=None,
              help="Folder with ok/ and ng/ (or ko/) samples, or with <role>/<roi>/ok/ [the stored samples].")
@click.option("--mm-per-px", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Millimetres per pixel of samples without a sidecar value [the model's recorded value, else 0.2].")
@click.option("--area-mm2-thr", type=click.FloatRange(min=0), default=None,
              help="Smallest region area in mm² [BDI_AREA_MM2_THR].")
@click.option("--score-percentile", type=click.IntRange(1, 100), default=None,
              help="Percentile of the OK scores [BDI_SCORE_PERCENTILE].")
@click.option("--allow-fitted", is_flag=True,
              help="Calibrate even when every OK sample was used to fit the memory (the threshold comes out low).")
@recipe_option
@record_option
@models_dir_option
def calibrate(role_id: str, roi_id: str, dataset_dir: Path | None, mm_per_px: float | None,
              area_mm2_thr: float | None, score_percentile: int | None, allow_fitted: bool, recipe_id: str,
              record: bool, models_dir: Path | None) -> None:
    """Score every OK and NG sample of a dataset folder, then calibrate the threshold of ROLE_ID / ROI_ID."""
    from ..quality import overlap_warning

    dataset = _dataset(dataset_dir, role_id, roi_id, recipe_id, models_dir)
    service = _service(models_dir)
    state = _fitted_state(service, role_id, roi_id, recipe_id)
    ok, ng = _calibration_samples(dataset, _provenance(service, state), allow_fitted)
    rule = _mm_per_px(service, state, mm_per_px)
    err = rich_console(stderr=True)
    err.print(f"{rule.describe(ok + ng)}; the calibration records {rule.common(ok + ng):g}.")
    context = cli_context(record=record)
    scores: dict[str, list[float]] = {"ok": [], "ng": []}
    with _progress() as progress:
        for sample in progress.track(ok + ng, description="Scoring samples"):
            try:
                result = service.infer(role_id, roi_id, rule.value(sample), _upload(sample), shape=sample.shape,
                                       context=context, recipe_id=recipe_id, require_calibration=False)
            except ServiceError as exc:
                raise CliError(f"{sample.path}: {exc.message}") from None
            scores[sample.label].append(result["score"])
    values = service.calibrate(
        role_id, roi_id, scores["ok"], scores["ng"] or None, mm_per_px=rule.common(ok + ng),
        area_mm2_thr=area_mm2_thr, score_percentile=score_percentile, context=context, recipe_id=recipe_id,
    )
    print_table(
        f"Calibrated {model_label(recipe_id, role_id, roi_id)} on {len(ok)} OK and {len(ng)} NG sample(s)",
        ("field", "value"),
        values.items(),
    )
    warning = overlap_warning(values, scores["ng"])
    if warning:
        err.print(f"[yellow]Warning:[/] {warning}")


def _outside_holdout(samples: list[Sample], provenance: dict[str, Any]) -> tuple[list[Sample], list[Sample]]:
    """(to append, held out): the samples the active memory's fit held out for calibration stay out of an append
    (recognised by sha256), so a later `bdi calibrate` still has unseen OK samples."""
    held = set(provenance.get("holdout_sha256") or [])
    kept = [sample for sample in samples if sha256_file(sample.path) in held]
    if kept:
        rich_console(stderr=True).print(f"Keeping the {len(kept)} sample(s) the fit held out for calibration out of "
                                        "the memory (--all appends them too).")
    appended = [sample for sample in samples if sample not in kept]
    if not appended:
        raise CliError(f"Every one of the {len(samples)} OK sample(s) was held out for calibration by the fit; add new "
                       "OK samples, or pass --all to append the held-out ones (calibrate on other samples then).")
    return appended, kept


def _calibration_samples(
    dataset: Dataset, provenance: dict[str, Any], allow_fitted: bool = False
) -> tuple[list[Sample], list[Sample]]:
    """The OK samples the memory was not fitted on (and every NG sample) when the fit recorded its dataset;
    else every OK sample, with a warning: a memory scores its own images low, so the threshold comes out low."""
    err = rich_console(stderr=True)
    split = split_seen(dataset.ok, dataset.root, provenance)
    if split.matched_by is None:
        err.print("[yellow]Note:[/] this memory records no holdout; if these OK samples were used to fit it, "
                  "their scores are biased low and so is the threshold (`bdi fit --holdout 0.3` avoids it).")
    elif split.unseen:
        err.print(f"Scoring the {len(split.unseen)} OK sample(s) not used to fit this memory (of {len(dataset.ok)}, "
                  f"recognised by {split.matched_by}) and every NG sample.")
        return split.unseen, dataset.ng
    elif not allow_fitted:
        raise CliError(f"All {len(dataset.ok)} OK samples were used to fit this memory: a memory scores its own images "
                       "low, so the threshold would be too low. Fit with --holdout 0.3 (or add OK samples the memory has "
                       "not seen) and calibrate again; --allow-fitted calibrates on them anyway.")
    else:
        err.print(f"[yellow]Warning:[/] all {len(dataset.ok)} OK samples were used to fit this memory; "
                  "their scores are biased low, so the threshold will be too low (--allow-fitted).")
    return dataset.ok, dataset.ng


@click.command("eval")
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), default=None,
              help="Folder with ok/ and ng/ (or ko/) samples, or with <role>/<roi>/ok/ [the stored samples].")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for summary.json, scores.png, colour_scale.png, overlays/ and README.md.")
@click.option("--mm-per-px", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Millimetres per pixel of samples without a sidecar value [the model's recorded value, else 0.2].")
@click.option("--include-fitted", is_flag=True,
              help="Also score the OK samples the memory was fitted on and report them apart (never in the headline).")
@click.option("--overlay-scale", type=click.Choice(["report", "image"]), default="report", show_default=True,
              help="Overlay colours: one scale for the report, anchored at the threshold, or each image stretched "
                   "to itself.")
@recipe_option
@record_option
@models_dir_option
def evaluate_command(role_id: str, roi_id: str, dataset_dir: Path | None, report_dir: Path, mm_per_px: float | None,
                     include_fitted: bool, overlay_scale: str, recipe_id: str, record: bool,
                     models_dir: Path | None) -> None:
    """Score the samples of a labelled dataset like /infer and write a quality report; its figures are on the
    samples the memory was not fitted on."""
    from ..quality import evaluate

    dataset = _dataset(dataset_dir, role_id, roi_id, recipe_id, models_dir)
    service = _service(models_dir)
    state = _fitted_state(service, role_id, roi_id, recipe_id)
    split = split_seen(dataset.ok, dataset.root, _provenance(service, state))
    rule = _mm_per_px(service, state, mm_per_px)
    scored = (dataset.ok if include_fitted else split.unseen) + dataset.ng
    err = rich_console(stderr=True)
    err.print(split.describe()
              + (" They are left out (--include-fitted reports them apart)." if split.fitted and not include_fitted
                 else ""))
    err.print(f"{rule.describe(scored)}.")
    with _progress() as progress:
        task = progress.add_task("Scoring samples", total=len(scored))
        try:
            summary = evaluate(service, role_id, roi_id, dataset.ok + dataset.ng, report_dir,
                               fitted={sample.path for sample in split.fitted}, include_fitted=include_fitted,
                               seen_note=split.describe(), mm_per_px=rule, overlay_scale=overlay_scale,
                               progress=lambda done, _total: progress.update(task, completed=done), recipe_id=recipe_id,
                               context=cli_context(record=record))
        except ServiceError as exc:
            raise CliError(exc.message) from None
        except ValueError as exc:
            raise CliError(f"{exc}.", EXIT_USAGE) from None
    keys = ("n_ok", "n_ng", "image_auroc", "pixel_auroc", "threshold", "precision", "recall", "f1")
    fitted = summary["fitted_ok"] or {}
    print_table(
        f"Evaluation of {model_label(recipe_id, role_id, roi_id)}: {summary['headline']}", ("metric", "value"),
        [(key, summary[key]) for key in keys]
        + [(f"confusion {key}", value) for key, value in (summary["confusion"] or {}).items()]
        + [(f"fitted on: {key}", fitted[key]) for key in keys if fitted],
    )
    rich_console().print(f"Report: {report_dir / 'README.md'}")

"""``bdi fit``, ``bdi calibrate`` and ``bdi eval``: the service's own fit / infer / calibrate path, fed
from the GUI's dataset folders instead of HTTP."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import ServiceError
from ..quality import Dataset, Sample, common_mm_per_px, load_dataset, relative_name, split_holdout
from ..settings import Settings
from ..storage import ModelState
from .common import DEFAULT_MM_PER_PX, EXIT_USAGE, CliError, models_dir_option, print_table, rich_console

if TYPE_CHECKING:  # the service pulls in torch; admin commands never import it
    from ..inspection import InspectionService, Upload


def _service(models_dir: Path | None) -> InspectionService:
    """The InspectionService of the current settings (loads the backbone), started like the app's."""
    from ..inspection import InspectionService

    service = InspectionService(Settings.load(models_dir=models_dir))
    click.get_current_context().call_on_close(service.close)
    service.start()
    return service


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=rich_console(stderr=True))


def _dataset(dataset_dir: Path, role_id: str, roi_id: str) -> Dataset:
    dataset = load_dataset(dataset_dir, role_id, roi_id)
    for path, reason in dataset.skipped:
        rich_console(stderr=True).print(f"skipped {path}: {reason}")
    if not dataset.ok:
        raise CliError(f"Dataset {dataset.root} has no OK samples (PNG/JPG/BMP in ok/).", EXIT_USAGE)
    return dataset


def _fitted_state(service: InspectionService, role_id: str, roi_id: str) -> ModelState:
    state = service.model_state(role_id, roi_id)
    if state is None or state.active is None:
        raise CliError(f"There is no memory for role_id={role_id!r} roi_id={roi_id!r}; "
                       f"run `bdi fit {role_id} {roi_id} --dataset DIR` first.")
    return state


def _provenance(service: InspectionService, state: ModelState) -> dict[str, Any]:
    """What the active version recorded about the dataset it was fitted on (empty for HTTP fits)."""
    manifest = service.store.version_files(service.store.root / state.folder, state.active_version).manifest
    return manifest.get("dataset") or {}


def _upload(sample: Sample) -> Upload:
    from ..inspection import Upload

    return Upload(sample.path.name, sample.path.read_bytes())


@click.command()
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), required=True,
              help="Folder with ok/ (and ng/) samples, or with <role>/<roi>/ok/.")
@click.option("--memory-fit", is_flag=True, help="Keep every patch (coreset rate 1.0).")
@click.option("--mm-per-px", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Millimetres per pixel [the sidecars' value, else 0.2].")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="Fraction of the OK samples kept out of the memory (seeded) for `bdi calibrate` to score.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the holdout split.")
@models_dir_option
def fit(role_id: str, roi_id: str, dataset_dir: Path, memory_fit: bool, mm_per_px: float | None,
        holdout: float, seed: int, models_dir: Path | None) -> None:
    """Fit the memory of ROLE_ID / ROI_ID from the OK samples of a dataset folder.

    With --holdout the held-out samples are recorded with the version, and `bdi calibrate` on the same
    dataset scores those instead of the images the memory was built from.
    """
    from ..inspection import RequestContext

    dataset = _dataset(dataset_dir, role_id, roi_id)
    fit_samples, held_out = split_holdout(dataset.ok, holdout, seed)
    mm_per_px = mm_per_px or common_mm_per_px(dataset.ok, DEFAULT_MM_PER_PX)
    service = _service(models_dir)
    with _progress() as progress:
        uploads = [_upload(sample) for sample in progress.track(fit_samples, description="Reading OK samples")]
    provenance = {
        "dataset": str(dataset.root.resolve()),
        "holdout_rate": holdout,
        "seed": seed,
        "fit_files": [relative_name(sample, dataset.root) for sample in fit_samples],
        "holdout_files": [relative_name(sample, dataset.root) for sample in held_out],
    }
    with rich_console(stderr=True).status(f"Fitting {role_id} / {roi_id} on {len(uploads)} image(s)"):
        result = service.fit(role_id, roi_id, mm_per_px, uploads, memory_fit=memory_fit,
                             context=RequestContext(correlation_id=uuid.uuid4().hex, source="cli"),
                             provenance=provenance)
    state = service.model_state(role_id, roi_id)
    print_table(
        f"Fitted {role_id} / {roi_id}: version {state.active_version if state else '-'}", ("field", "value"),
        [("images", len(uploads)), ("held out", len(held_out)), ("mm_per_px", mm_per_px), *result.items()],
    )


@click.command()
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), required=True,
              help="Folder with ok/ and ng/ (or ko/) samples, or with <role>/<roi>/ok/.")
@click.option("--mm-per-px", type=click.FloatRange(min=0, min_open=True), default=None,
              help="mm_per_px stored with the calibration [the sidecars' value, else 0.2].")
@click.option("--area-mm2-thr", type=click.FloatRange(min=0), default=None,
              help="Smallest region area in mm² [BDI_AREA_MM2_THR].")
@click.option("--score-percentile", type=click.IntRange(1, 100), default=None,
              help="Percentile of the OK scores [BDI_SCORE_PERCENTILE].")
@models_dir_option
def calibrate(role_id: str, roi_id: str, dataset_dir: Path, mm_per_px: float | None, area_mm2_thr: float | None,
              score_percentile: int | None, models_dir: Path | None) -> None:
    """Score every OK and NG sample of a dataset folder, then calibrate the threshold of ROLE_ID / ROI_ID."""
    from ..inspection import RequestContext

    dataset = _dataset(dataset_dir, role_id, roi_id)
    service = _service(models_dir)
    ok, ng = _calibration_samples(dataset, _provenance(service, _fitted_state(service, role_id, roi_id)))
    context = RequestContext(correlation_id=uuid.uuid4().hex, source="cli")
    scores: dict[str, list[float]] = {"ok": [], "ng": []}
    with _progress() as progress:
        for sample in progress.track(ok + ng, description="Scoring samples"):
            try:
                result = service.infer(role_id, roi_id, sample.mm_per_px or DEFAULT_MM_PER_PX, _upload(sample),
                                       shape=sample.shape, context=context)
            except ServiceError as exc:
                raise CliError(f"{sample.path}: {exc.message}") from None
            scores[sample.label].append(result["score"])
    values = service.calibrate(
        role_id, roi_id, scores["ok"], scores["ng"] or None,
        mm_per_px=mm_per_px or common_mm_per_px(ok + ng, DEFAULT_MM_PER_PX),
        area_mm2_thr=area_mm2_thr, score_percentile=score_percentile, context=context,
    )
    print_table(
        f"Calibrated {role_id} / {roi_id} on {len(ok)} OK and {len(ng)} NG sample(s)", ("field", "value"),
        values.items(),
    )


def _calibration_samples(dataset: Dataset, provenance: dict[str, Any]) -> tuple[list[Sample], list[Sample]]:
    """The OK samples the memory has not seen when the fit recorded a holdout of this dataset; else
    every OK sample, with a warning: a memory scores its own images low, so the threshold comes out low."""
    err = rich_console(stderr=True)
    names = {relative_name(sample, dataset.root): sample for sample in dataset.ok}
    held_out = [names[name] for name in provenance.get("holdout_files") or [] if name in names]
    if held_out:
        err.print(f"Scoring the {len(held_out)} OK sample(s) held out of the fit (of {len(dataset.ok)}) "
                  f"and every NG sample.")
        return held_out, dataset.ng
    seen = len(set(provenance.get("fit_files") or []) & set(names))
    if seen:
        err.print(f"[yellow]Warning:[/] {seen} of the {len(dataset.ok)} OK samples were used to fit this memory; "
                  "their scores are biased low, so the threshold will be too low. "
                  "Fit with --holdout 0.3 and calibrate again.")
    elif not provenance:
        err.print("[yellow]Note:[/] this memory records no holdout; if these OK samples were used to fit it, "
                  "their scores are biased low and so is the threshold (`bdi fit --holdout 0.3` avoids it).")
    return dataset.ok, dataset.ng


@click.command("eval")
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--dataset", "dataset_dir", type=click.Path(path_type=Path), required=True,
              help="Folder with ok/ and ng/ (or ko/) samples, or with <role>/<roi>/ok/.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for summary.json, scores.png, overlays/ and README.md.")
@models_dir_option
def evaluate_command(role_id: str, roi_id: str, dataset_dir: Path, report_dir: Path, models_dir: Path | None) -> None:
    """Score every sample of a labelled dataset like /infer and write a quality report."""
    from ..quality import evaluate

    dataset = _dataset(dataset_dir, role_id, roi_id)
    service = _service(models_dir)
    provenance = _provenance(service, _fitted_state(service, role_id, roi_id))
    seen = len(set(provenance.get("fit_files") or []) & {relative_name(s, dataset.root) for s in dataset.ok})
    if seen:
        rich_console(stderr=True).print(f"[yellow]Note:[/] {seen} OK sample(s) were used to fit this memory; "
                                    "they score lower than new parts would.")
    samples = dataset.ok + dataset.ng
    with _progress() as progress:
        task = progress.add_task("Scoring samples", total=len(samples))
        try:
            summary = evaluate(service, role_id, roi_id, samples, report_dir,
                               progress=lambda done, _total: progress.update(task, completed=done))
        except ServiceError as exc:
            raise CliError(exc.message) from None
    confusion = summary.get("confusion") or {}
    print_table(
        f"Evaluation of {role_id} / {roi_id}", ("metric", "value"),
        [(key, summary[key]) for key in ("n_ok", "n_ng", "image_auroc", "pixel_auroc", "threshold", "precision",
                                         "recall", "f1")]
        + [(f"confusion {key}", value) for key, value in confusion.items()],
    )
    rich_console().print(f"Report: {report_dir / 'README.md'}")

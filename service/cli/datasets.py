"""``bdi datasets ...``: the samples the newer GUI stored in the service (the dataset store), listed, exported
to a folder in the GUI's layout (``ok/``, ``ng/``, ``.json`` sidecars: what ``bdi fit/calibrate/eval --dataset``
read) and imported from such a folder. These commands never load the backbone."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import click

from ..errors import ServiceError
from ..quality import load_dataset
from ..storage import LABELS, DatasetStore, NewSample, prepare_sample, sha256_file, store_samples
from .common import (
    EXIT_PROBLEMS,
    CliError,
    echo_json,
    json_option,
    model_label,
    models_dir_option,
    open_models,
    print_table,
    recipe_filter_option,
    recipe_option,
    rich_console,
)


@click.group()
def datasets() -> None:
    """List, export and import the samples stored for the newer GUI."""


@datasets.command("list")
@recipe_filter_option
@models_dir_option
@json_option
def list_datasets(recipe_id: str | None, models_dir: Path | None, as_json: bool) -> None:
    """Every (recipe, role, roi) with stored samples: how many OK and NG, the newest name and the recipe's locked
    mm/px (none in the default namespace)."""
    opened = open_models(models_dir)
    store = DatasetStore(opened.store)
    locks = opened.registry.recipes()
    rows = []
    for folder in store.scan():
        if recipe_id not in (None, folder.recipe_id):
            continue
        samples = {label: store.samples(folder.path, label) for label in LABELS}
        names = [sample.name for label in LABELS for sample in samples[label]]
        rows.append({"recipe_id": folder.recipe_id, "role_id": folder.role_id, "roi_id": folder.roi_id,
                     "ok": len(samples["ok"]), "ng": len(samples["ng"]), "newest": max(names, default=None),
                     "mm_per_px_lock": locks.get(folder.recipe_id), "folder": opened.store.relative(folder.path)})
    if as_json:
        echo_json(rows)
    elif not rows:
        rich_console().print(f"No stored samples in {opened.settings.models_dir}.")
    else:
        columns = ("recipe_id", "role_id", "roi_id", "ok", "ng", "newest", "mm_per_px_lock")
        print_table(None, ("recipe", "role", "roi", "ok", "ng", "newest", "mm/px lock"),
                    ([row[key] for key in columns] for row in rows))


@datasets.command("export")
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--output", "output_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write ok/ and ng/ into (created; samples already there are left as they are).")
@recipe_option
@models_dir_option
def export(role_id: str, roi_id: str, output_dir: Path, recipe_id: str, models_dir: Path | None) -> None:
    """Copy the stored samples of ROLE_ID / ROI_ID, with their sidecars, into OUTPUT/ok and OUTPUT/ng."""
    opened = open_models(models_dir)
    store = DatasetStore(opened.store)
    folder = store.folder(recipe_id, role_id, roi_id)
    samples = [sample for label in LABELS for sample in store.samples(folder, label)]
    if not samples:
        raise CliError(f"There are no stored samples of {model_label(recipe_id, role_id, roi_id)} in "
                       f"{opened.settings.models_dir}.")
    for sample in samples:  # names are never reused: another file under a stored name is not ours to replace
        target = output_dir / sample.label / sample.name
        if target.exists() and sha256_file(target) != sha256_file(sample.path):
            raise CliError(f"{target} exists and is not the stored sample {sample.name}; export into another folder.")
    copied = 0
    for sample in samples:
        target = output_dir / sample.label / sample.name
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if sample.sidecar.is_file():
            shutil.copyfile(sample.sidecar, target.with_suffix(".json"))
        shutil.copyfile(sample.path, target)
        copied += 1
    rich_console().print(
        f"Exported {copied} sample(s) of {model_label(recipe_id, role_id, roi_id)} to {output_dir} "
        f"({len(samples) - copied} already there); `bdi fit {role_id} {roi_id} --dataset {output_dir}` reads it."
    )


@datasets.command("import")
@click.argument("role_id")
@click.argument("roi_id")
@click.option("--from", "source_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A dataset folder in the GUI's layout: ok/ and ng/ (or ko/), or <role>/<roi>/ok/ ...")
@recipe_option
@models_dir_option
def import_samples(role_id: str, roi_id: str, source_dir: Path, recipe_id: str, models_dir: Path | None) -> None:
    """Store the samples of a dataset folder as ROLE_ID / ROI_ID's, checked like uploads (ground-truth masks
    are not samples and stay behind). A sample already stored (same bytes, same class) is not stored twice."""
    opened = open_models(models_dir)
    store = DatasetStore(opened.store)
    dataset = load_dataset(source_dir, role_id, roi_id)
    folder = store.folder(recipe_id, role_id, roi_id)
    refused: list[tuple[str, str]] = [(str(path), reason) for path, reason in dataset.skipped]
    stored = duplicates = 0
    for label, found in (("ok", dataset.ok), ("ng", dataset.ng)):
        known = {sha256_file(sample.path) for sample in store.samples(folder, label)}
        checked: list[NewSample] = []
        for sample in found:
            data = sample.path.read_bytes()
            if hashlib.sha256(data).hexdigest() in known:
                duplicates += 1
                continue
            sidecar = sample.path.with_suffix(".json")
            meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
            try:
                checked.append(prepare_sample(sample.path.name, data, meta, opened.settings.max_image_pixels,
                                              str(sample.path)))
            except ServiceError as exc:
                refused.append((str(sample.path), exc.message))
            known.add(hashlib.sha256(data).hexdigest())
        if checked:
            try:
                result = store_samples(store, opened.registry, recipe_id, role_id, roi_id, label, checked)
                stored += len(result.saved) - len(result.already_stored)
                duplicates += len(result.already_stored)
            except ServiceError as exc:
                raise CliError(exc.message) from None
    if refused:
        print_table(f"{len(refused)} sample(s) not imported", ("sample", "why"), refused)
    rich_console().print(f"Imported {stored} sample(s) into {model_label(recipe_id, role_id, roi_id)}"
                         f"{f'; {duplicates} were stored already' if duplicates else ''}.")
    if refused:
        raise click.exceptions.Exit(EXIT_PROBLEMS)

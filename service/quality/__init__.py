"""Quality of a model: the GUI's dataset folders, evaluation reports, drift of the recorded scores and
the project's figures. Exported lazily: reading a dataset folder or the records does not import the
service core (and torch) that evaluation scores through, nor matplotlib."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Dataset": "datasets",
    "DatasetError": "datasets",
    "MmPerPx": "datasets",
    "Sample": "datasets",
    "SeenSplit": "datasets",
    "fit_provenance": "datasets",
    "load_dataset": "datasets",
    "relative_name": "datasets",
    "split_holdout": "datasets",
    "split_seen": "datasets",
    "OVERLAY_SCALES": "evaluation",
    "evaluate": "evaluation",
    "overlap_warning": "evaluation",
    "HeatScale": "plots",
    "new_figure": "plots",
    "save_png": "plots",
    "score_histogram": "plots",
    "scores_over_time": "plots",
    "DriftLimits": "drift",
    "analyse_drift": "drift",
    "plot_drift": "drift",
})

"""Quality of a model: the GUI's dataset folders and evaluation reports. Exported lazily: reading a dataset
folder does not import the service core (and torch) that evaluation scores through."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Dataset": "datasets",
    "DatasetError": "datasets",
    "Sample": "datasets",
    "common_mm_per_px": "datasets",
    "load_dataset": "datasets",
    "relative_name": "datasets",
    "split_holdout": "datasets",
    "evaluate": "evaluation",
})

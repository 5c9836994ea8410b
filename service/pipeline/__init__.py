"""The numbers: image decoding, letterbox, DINOv2 features, micro-batching, PatchCore memory and index,
anomaly map, masks and the calibration rule. Imports nothing from storage, web or cli; its names are
exported lazily, so ``service.storage`` uses the memory index without importing torch."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "FeatureExtractor": "features",
    "extractor_fingerprint": "features",
    "offline_extractor_fingerprint": "features",
    "preprocess": "features",
    "MicroBatcher": "batching",
    "MemoryIndex": "patchcore",
    "PROJECTION_DIM": "patchcore",
    "Coreset": "patchcore",
    "coreset_size": "patchcore",
    "covering_radius_bound": "patchcore",
    "k_center_coreset": "patchcore",
    "select_coreset": "patchcore",
    "anomaly_map": "anomaly",
    "find_regions": "anomaly",
    "heatmap_png": "anomaly",
    "stretched_scale": "anomaly",
    "threshold_scale": "anomaly",
    "image_score": "anomaly",
    "Shape": "masks",
    "parse_shape": "masks",
    "shape_mask": "masks",
    "decode_image": "images",
    "image_format": "images",
    "Letterbox": "letterbox",
    "calibrate": "calibration",
    "percentile_value": "calibration",
})

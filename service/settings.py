"""Settings: environment first (``BDI_*``, then the old ``BRAKEDISC_*`` and the spec's bare names),
then an optional TOML config file (``BDI_CONFIG``), then defaults.

One table (``_FIELDS``) says, per setting, which variables are read in which order, how the text is
parsed and what the default is; the README's settings table is written from the same facts.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

MODEL_NAME = "vit_small_patch14_dinov2.lvd142m"
PATCH_SIZE = 14


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{text!r} is not a boolean (use 1/0, true/false)")


def _parse_positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a finite number > 0")
    return value


def _parse_positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"{text!r} is not an integer > 0")
    return value


def _parse_rate(text: str) -> float:
    value = float(text)
    if not (0 < value <= 1):
        raise ValueError(f"{text!r} is not a rate in (0, 1]")
    return value


def _parse_holdout(text: str) -> float:
    value = float(text)
    if not (0 <= value <= 0.9):
        raise ValueError(f"{text!r} is not a fraction in [0, 0.9]")
    return value


def _parse_percentile(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise ValueError(f"{text!r} is not an integer percentile in 1..100")
    return value


def _parse_input_size(text: str) -> int:
    value = int(text)
    if value <= 0 or value % PATCH_SIZE:
        raise ValueError(f"{text!r} is not a positive multiple of {PATCH_SIZE}")
    return value


def _parse_port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(f"{text!r} is not a TCP port")
    return value


def _parse_device(text: str) -> str:
    value = text.strip().lower()
    if value in {"auto", "cpu", "cuda", "mps"} or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise ValueError(f"{text!r} is not one of auto, cpu, cuda, cuda:N, mps")


PRECISIONS = ("fp32", "bf16", "fp16")


def _parse_precision(text: str) -> str:
    value = text.strip().lower()
    if value in PRECISIONS:
        return value
    raise ValueError(f"{text!r} is not one of {', '.join(PRECISIONS)}")


def _parse_batch_size(text: str) -> int | str:
    value = text.strip().lower()
    return value if value == "auto" else _parse_positive_int(value)


def _parse_non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text!r} is not an integer >= 0")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


RECORD_IMAGES = ("none", "ng", "review", "all")
LOG_FORMATS = ("text", "json")


def _parse_origins(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _text(text: str) -> str:
    return text.strip()


@dataclasses.dataclass(frozen=True)
class _Field:
    env: tuple[str, ...]
    parse: Callable[[str], Any]
    default: Any
    help: str


_FIELDS: dict[str, _Field] = {
    "models_dir": _Field(("BDI_MODELS_DIR", "BRAKEDISC_MODELS_DIR"), _text, "models",
                         "root folder of the model artifacts and the registry"),
    "database_url": _Field(("BDI_DATABASE_URL",), _text, "",
                           "SQLAlchemy URL of the registry; empty: sqlite:///<models_dir>/registry.sqlite3"),
    "database_connect_timeout": _Field(("BDI_DATABASE_CONNECT_TIMEOUT",), _parse_positive_int, 5,
                                       "PostgreSQL registry: seconds to wait for a connection (at least 2) before "
                                       "a request answers 503"),
    "database_statement_timeout": _Field(("BDI_DATABASE_STATEMENT_TIMEOUT",), _parse_positive_float, 15.0,
                                         "PostgreSQL registry: seconds one registry query may run before a request "
                                         "answers 503 (migrations and lock waits are not bounded)"),
    "device": _Field(("BDI_DEVICE", "BRAKEDISC_DEVICE", "DEVICE"), _parse_device, "auto",
                     "auto, cpu, cuda, cuda:N or mps"),
    "input_size": _Field(("BDI_INPUT_SIZE", "BRAKEDISC_INPUT_SIZE"), _parse_input_size, 448,
                         "letterbox side in pixels, a multiple of 14 (token grid = input_size / 14)"),
    "weights": _Field(("BDI_WEIGHTS", "BRAKEDISC_WEIGHTS"), _text, "hub",
                      "hub (timm pretrained; a local HF cache is honoured), a .safetensors/.pth path, or random"),
    "coreset_rate": _Field(("BDI_CORESET_RATE", "BRAKEDISC_CORESET_RATE", "CORESET_RATE"), _parse_rate, 0.02,
                           "fraction of patches kept in the memory bank"),
    "score_percentile": _Field(("BDI_SCORE_PERCENTILE", "BRAKEDISC_SCORE_PERCENTILE"), _parse_percentile, 99,
                               "default percentile of calibration and of the score when uncalibrated"),
    "area_mm2_thr": _Field(("BDI_AREA_MM2_THR", "BRAKEDISC_AREA_MM2_THR"), _parse_positive_float, 1.0,
                           "default smallest region area in mm2"),
    "host": _Field(("BDI_BACKEND_HOST", "BRAKEDISC_BACKEND_HOST"), _text, "127.0.0.1",
                   "bind address (the bare HOST variable is deliberately not read)"),
    "port": _Field(("BDI_BACKEND_PORT", "BRAKEDISC_BACKEND_PORT", "PORT"), _parse_port, 8000, "bind port"),
    "max_fit_images": _Field(("BDI_MAX_FIT_IMAGES",), _parse_positive_int, 1000,
                             "most images in one /fit_ok (else 413)"),
    "max_image_pixels": _Field(("BDI_MAX_IMAGE_PIXELS",), _parse_positive_int, 100_000_000,
                               "most pixels of one image, read from its header before decoding (else 413)"),
    "max_body_mb": _Field(("BDI_MAX_BODY_MB",), _parse_positive_float, 1024.0,
                          "largest request body in MB (else 413)"),
    "max_memory_rows": _Field(("BDI_MAX_MEMORY_ROWS",), _parse_positive_int, 5_000,
                              "most rows a memory may grow to by appends (else 413); each row costs 9 KB loaded and "
                              "search time on every /infer (see README, Speed)"),
    "keep_versions": _Field(("BDI_KEEP_VERSIONS",), _parse_positive_int, 5,
                            "memory versions kept per model, the active one included"),
    "cache_size": _Field(("BDI_CACHE_SIZE",), _parse_positive_int, 16,
                         "memory banks kept loaded per process"),
    "fit_batch_size": _Field(("BDI_FIT_BATCH_SIZE",), _parse_positive_int, 8,
                             "images per backbone forward during a fit"),
    "infer_batch_size": _Field(("BDI_INFER_BATCH_SIZE",), _parse_batch_size, "auto",
                               "most concurrent /infer images sharing one backbone forward; auto: 1 (no "
                               "batching) on CPU, where it gains nothing, 8 on a GPU"),
    "precision": _Field(("BDI_PRECISION",), _parse_precision, "fp32",
                        "backbone arithmetic: fp32, or bf16/fp16 autocast (faster on GPUs and bf16 CPUs; "
                        "scores move slightly, see README)"),
    "require_calibration": _Field(("BDI_REQUIRE_CALIBRATION",), _parse_bool, False,
                                  "answer /infer of an uncalibrated model with 400 calibration_missing instead of "
                                  "threshold null (plants on the newer GUI)"),
    "min_ok_samples": _Field(("BDI_MIN_OK_SAMPLES",), _parse_positive_int, 10,
                             "fewest stored OK samples /fit_ok use_dataset=true trains from (else 400)"),
    "dataset_holdout": _Field(("BDI_DATASET_HOLDOUT",), _parse_holdout, 0.0,
                              "fraction of the stored OK samples /fit_ok use_dataset=true keeps out of the memory "
                              "(seeded), so that /calibrate_dataset takes the OK threshold from samples the memory "
                              "has not seen; 0: train on all of them"),
    "error_trace": _Field(("BDI_ERROR_TRACE",), _parse_bool, True,
                          "include the traceback in 500 bodies"),
    "api_key": _Field(("BDI_API_KEY",), _text, "",
                      "when set, every route but /health needs the header X-API-Key with this value"),
    "session_secret": _Field(("BDI_SESSION_SECRET",), _text, "",
                             "signs the console's login cookies; empty: a random secret made once and kept in "
                             "<models_dir>/console-session.secret (the hosts share the models dir, so they share it)"),
    "cors_origins": _Field(("BDI_CORS_ORIGINS",), _parse_origins, (),
                           "comma-separated origins allowed by CORS; empty: CORS off"),
    "log_level": _Field(("BDI_LOG_LEVEL",), lambda t: t.strip().upper(), "INFO", "logging level"),
    "log_format": _Field(("BDI_LOG_FORMAT",), _choice(*LOG_FORMATS), "text",
                         "text, or json: one JSON object per line (time, level, logger, message, correlation_id, "
                         "role_id, roi_id) for log shippers"),
    "record": _Field(("BDI_RECORD",), _parse_bool, True,
                     "keep a record of every answered /infer in the registry (audit trail, drift, bdi inspections)"),
    "record_images": _Field(("BDI_RECORD_IMAGES",), _choice(*RECORD_IMAGES), "review",
                            "which inspections keep their uploaded image and heatmap under <models_dir>/@records: "
                            "none, ng (NG decisions), review (NG decisions and the OK decisions within "
                            "BDI_RECORD_NEAR_MARGIN of the threshold, where a missed defect hides: what the review "
                            "queue lists) or all"),
    "record_near_margin": _Field(("BDI_RECORD_NEAR_MARGIN",), _parse_rate, 0.10,
                                 "BDI_RECORD_IMAGES=review: an OK decision keeps its image when |score / threshold "
                                 "- 1| <= this (0.10: scores from 90 % of the threshold up)"),
    "record_max_mb": _Field(("BDI_RECORD_MAX_MB",), _parse_positive_float, 2048.0,
                            "most MB of kept images and heatmaps; the oldest are deleted first"),
    "record_retention_days": _Field(("BDI_RECORD_RETENTION_DAYS",), _parse_non_negative_int, 365,
                                    "records (rows and images) older than this many days are deleted; 0: kept forever"),
    "record_queue_size": _Field(("BDI_RECORD_QUEUE_SIZE",), _parse_positive_int, 10_000,
                                "records waiting for the background writer; when full, new records are dropped "
                                "(logged and counted), never the inspection"),
    "job_heartbeat_s": _Field(("BDI_JOB_HEARTBEAT_S",), _parse_positive_float, 5.0,
                              "seconds between a host's heartbeats of the jobs it runs (replay); a job unrenewed "
                              "for 6 beats is failed by whichever host reads it (its host died)"),
    "drift_min_inspections": _Field(("BDI_DRIFT_MIN_INSPECTIONS",), _parse_positive_int, 30,
                                    "bdi models drift: fewer inspections in the window give the verdict "
                                    "'too few inspections'"),
    "drift_max_shift": _Field(("BDI_DRIFT_MAX_SHIFT",), _parse_positive_float, 0.25,
                              "bdi models drift: 'drifting' when the median score moved by more than this "
                              "fraction of the gap between the calibration's OK median and the threshold"),
    "drift_max_near_increase": _Field(("BDI_DRIFT_MAX_NEAR_INCREASE",), _parse_rate, 0.10,
                                      "bdi models drift: 'drifting' when the share of scores within 10% below the "
                                      "threshold grew by more than this (0.10 = 10 points) over the calibration's "
                                      "OK scores"),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob of the service, resolved once at start-up."""

    models_dir: Path
    database_url: str
    database_connect_timeout: int
    database_statement_timeout: float
    device: str
    input_size: int
    weights: str
    coreset_rate: float
    score_percentile: int
    area_mm2_thr: float
    host: str
    port: int
    max_fit_images: int
    max_image_pixels: int
    max_body_mb: float
    max_memory_rows: int
    keep_versions: int
    cache_size: int
    fit_batch_size: int
    infer_batch_size: int | str
    precision: str
    require_calibration: bool
    min_ok_samples: int
    dataset_holdout: float
    error_trace: bool
    api_key: str
    session_secret: str
    cors_origins: tuple[str, ...]
    log_level: str
    log_format: str
    record: bool
    record_images: str
    record_near_margin: float
    record_max_mb: float
    record_retention_days: int
    record_queue_size: int
    job_heartbeat_s: float
    drift_min_inspections: int
    drift_max_shift: float
    drift_max_near_increase: float

    @property
    def token_grid(self) -> tuple[int, int]:
        side = self.input_size // PATCH_SIZE
        return side, side

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Resolve every setting; ``overrides`` (e.g. the CLI's ``--models-dir``) win over everything."""
        env = os.environ if env is None else env
        file_values = _read_config_file(env.get("BDI_CONFIG", ""))
        values: dict[str, Any] = {}
        for name, spec in _FIELDS.items():
            if overrides.get(name) is not None:
                values[name] = overrides[name]
                continue
            source, raw = next(((var, env[var]) for var in spec.env if env.get(var, "").strip()), (None, None))
            if raw is None and name in file_values:
                value = file_values[name]
                source = f"{env['BDI_CONFIG']}:{name}"
                raw = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            if raw is None:
                values[name] = spec.default
                continue
            try:
                values[name] = spec.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"Setting {source} is invalid: {exc}.") from None
        values["models_dir"] = Path(values["models_dir"]).expanduser()
        if not values["database_url"]:
            values["database_url"] = f"sqlite:///{(values['models_dir'] / 'registry.sqlite3').resolve()}"
        return cls(**values)


def _read_config_file(path: str) -> dict[str, Any]:
    if not path.strip():
        return {}
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Setting BDI_CONFIG={path!r} can't be read: {exc}.") from None
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"Config file {path!r} has unknown keys {unknown}; known keys: {sorted(_FIELDS)}.")
    return data


def settings_table() -> list[tuple[str, str, str, str]]:
    """(setting, variables, default, meaning) rows, for the README and ``bdi --help``."""
    return [(name, " / ".join(spec.env), str(spec.default), spec.help) for name, spec in _FIELDS.items()]

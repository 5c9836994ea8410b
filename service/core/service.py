"""The core wired together: the resources every part shares (settings, backbone, store, registry, records,
metrics, memory cache), the parts built on them, and the service's life cycle (start, close)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from ..metrics import Metrics
from ..pipeline import FeatureExtractor, MicroBatcher
from ..settings import Settings
from ..storage import (
    ADOPTED,
    ALREADY_MIGRATED,
    IMPORTED,
    DatasetStore,
    MigrationAction,
    RecordStore,
    RecordWriter,
    migrate,
    open_storage,
)
from ..storage.jobs import JobStore
from .calibration import Calibration
from .datasets import DatasetSamples
from .inspection import Inspector
from .jobs import JobRunner
from .learning import Learning
from .memory import ActiveMemories, MemoryCache
from .overview import ModelOverview
from .records import RecordReader
from .replay import Replay
from .request import LOGGER_NAME
from .review import Reviews
from .status import ModelStatus
from .training import Training
from .versions import Versions

logger = logging.getLogger(LOGGER_NAME)


def _calls(part: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """A facade method that calls ``method`` of the part named ``part`` (signature and docstring are the part's)."""

    @functools.wraps(method)
    def call(self: InspectionService, *args: Any, **kwargs: Any) -> Any:
        return method(getattr(self, part), *args, **kwargs)

    return call


class InspectionService:
    """One code path for the HTTP routes and the CLI. Each part does one thing (``training``, ``calibration``,
    ``inspector``, ``status``, ``datasets``, ``record_reader``); the calls below only hand over to a part,
    under the names the routes and the CLI have always called."""

    fit = _calls("training", Training.fit)
    append = _calls("training", Training.append)
    fit_dataset = _calls("training", Training.fit_dataset)
    append_dataset = _calls("training", Training.append_dataset)
    calibrate = _calls("calibration", Calibration.calibrate)
    calibrate_dataset = _calls("calibration", Calibration.calibrate_dataset)
    infer = _calls("inspector", Inspector.infer)
    inspect = _calls("inspector", Inspector.inspect)
    model_state = _calls("status", ModelStatus.model_state)
    state = _calls("status", ModelStatus.state)
    health = _calls("status", ModelStatus.health)
    dataset_upload = _calls("datasets", DatasetSamples.upload)
    dataset_list = _calls("datasets", DatasetSamples.contents)
    dataset_file = _calls("datasets", DatasetSamples.file)
    dataset_delete = _calls("datasets", DatasetSamples.delete)
    dataset_meta = _calls("datasets", DatasetSamples.meta)
    inspections = _calls("record_reader", RecordReader.page)
    inspection = _calls("record_reader", RecordReader.get)
    inspection_file = _calls("record_reader", RecordReader.file)
    versions = _calls("version_control", Versions.list)
    activate = _calls("version_control", Versions.activate)
    learn = _calls("learning", Learning.learn)
    review = _calls("reviews", Reviews.review)
    review_history = _calls("reviews", Reviews.history)
    review_queue = _calls("reviews", Reviews.queue)
    set_shadow = _calls("reviews", Reviews.set_shadow)
    shadow = _calls("reviews", Reviews.shadow)
    replay = _calls("replayer", Replay.start)
    replay_here = _calls("replayer", Replay.run_here)
    job = _calls("jobs", JobRunner.get)
    overview = _calls("overview_reader", ModelOverview.models)
    model_overview = _calls("overview_reader", ModelOverview.model)

    def __init__(self, settings: Settings, extractor: FeatureExtractor | None = None) -> None:
        self.settings = settings
        self.extractor = extractor or FeatureExtractor(
            input_size=settings.input_size, weights=settings.weights, device=settings.device,
            precision=settings.precision,
        )
        if self.extractor.input_size != settings.input_size:
            raise ValueError("The extractor's input size differs from settings.input_size.")
        if self.extractor.precision != settings.precision:
            raise ValueError("The extractor's precision differs from settings.precision.")
        self.metrics = Metrics()
        self.store, self.registry = open_storage(settings)
        self.metrics.watch_engine(self.registry.engine)
        self.cache = MemoryCache(settings.cache_size)
        batch = settings.infer_batch_size
        if batch == "auto":  # a CPU forward already keeps every core busy: batching gains nothing there
            batch = 1 if self.extractor.device.type == "cpu" else 8
        self.batcher = MicroBatcher(self.extractor, int(batch), on_forward=self.metrics.observe_forward)
        self.records = RecordStore(self.registry.engine, settings.models_dir)
        self.recorder = RecordWriter(
            self.records, self.metrics, settings.record_queue_size, int(settings.record_max_mb * 1024 * 1024),
            settings.record_retention_days,
        )
        self.wire()

    def wire(self) -> None:
        """Build the parts on the current shared resources; called again after one of them is replaced
        (a test puts the service on a registry that is down), so no part keeps the old one."""
        settings, extractor, store, registry = self.settings, self.extractor, self.store, self.registry
        samples = DatasetStore(store)
        memories = ActiveMemories(self.cache, store, registry, extractor, self.metrics)
        self.status = ModelStatus(settings, extractor, store, registry, self.batcher)
        self.training = Training(settings, extractor, store, registry, samples, memories, self.status, self.metrics)
        self.inspector = Inspector(settings, extractor, store, registry, memories, self.status, self.batcher,
                                   self.recorder, self.metrics)
        self.calibration = Calibration(settings, extractor, store, registry, samples, memories, self.status,
                                       self.inspector)
        self.datasets = DatasetSamples(settings, samples, registry)
        self.record_reader = RecordReader(settings, self.records)
        self.version_control = Versions(settings, store, registry, self.status, extractor.grid)
        self.learning = Learning(settings, extractor, store, registry, memories, self.status, self.training,
                                 self.inspector)
        self.reviews = Reviews(registry, self.record_reader)
        self.jobs = JobRunner(JobStore(registry.engine, settings.job_heartbeat_s))
        self.replayer = Replay(settings, extractor, registry, self.records.root, memories, self.inspector,
                               self.batcher, self.jobs)
        self.overview_reader = ModelOverview(settings, store, registry, self.records)

    def start(self) -> None:
        """Migrate the registry, clean what killed writes left, import what earlier backends wrote, and
        index folders it does not know."""
        self.settings.models_dir.mkdir(parents=True, exist_ok=True)
        self.registry.upgrade()
        self.store.cleanup_leftovers()
        self.import_legacy()
        self.registry.sync_recipes(self.store)
        imported = sum(self.registry.resync(self.store, folder.path) is not None for folder in self.store.scan())
        removed = self.registry.remove_missing(self.store)
        logger.info(
            "Service ready: device=%s precision=%s infer_batch<=%d weights=%s input_size=%d grid=%s models_dir=%s "
            "registry=%s models=%d%s",
            self.extractor.device_name, self.extractor.precision, self.batcher.max_batch,
            self.extractor.weights_source, self.settings.input_size,
            self.extractor.grid, self.settings.models_dir.resolve(), self.registry.url, imported,
            f" (dropped {len(removed)} model(s) whose folders are gone)" if removed else "",
        )

    def import_legacy(self) -> list[MigrationAction]:
        """Import what earlier backends wrote (``bdi models migrate`` without options), so a GUI
        pointed at an old models dir works at once; legacy files stay where they are."""
        actions = migrate(self.store, self.registry, max_image_pixels=self.settings.max_image_pixels)
        for action in actions:
            if action.outcome != ALREADY_MIGRATED:
                level = logging.INFO if action.outcome in {IMPORTED, ADOPTED} else logging.WARNING
                logger.log(level, "Legacy model %s: %s", action.legacy.name, action.describe())
        return actions

    def close(self) -> None:
        self.jobs.close()  # first: its running replay stops at its next image, before the backbone's worker stops
        self.batcher.close()
        self.recorder.close()
        self.metrics.close()
        self.registry.dispose()

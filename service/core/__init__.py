"""The service's core: everything that decides anything, one code path for the HTTP routes and the CLI.
Routes parse and shape; every failure a client can cause is a ``ServiceError`` (a 4xx). Every call that
names a model takes ``recipe_id`` (None: the default namespace); it is checked here and never falls
through to another recipe.

Where things go (one module per part, each named for the one thing it does):

- ``request``: what every call carries (``Upload``, ``RequestContext``), the id check, the logger name.
- ``memory``: the memory cache the parts share and the loading of a model's active memory.
- ``training``: fit, append, fit from stored samples.
- ``calibration``: calibrate from scores, calibrate from the stored samples (scoring them as /infer does).
- ``inspection``: /infer's computation (decode, features, map, score, regions) and its record.
- ``status``: a model's state and the service's health.
- ``datasets``: the sample store operations (upload, list, read, delete, sidecars).
- ``records``: reading the inspection records.
- ``service``: ``InspectionService``, which only builds the shared resources, wires the parts and runs the
  life cycle; it adds no logic of its own.

Later parts get modules of their own here: review (verdicts, queue), versions (stage, activate, rollback),
jobs (replay), shadow scoring. A part takes the shared resources it needs in its constructor and is wired
in ``service``.
"""

from __future__ import annotations

from .calibration import DEFAULT_MM_PER_PX, Calibration
from .datasets import DatasetSamples
from .inspection import Inspection, Inspector
from .memory import ActiveMemories, MemoryCache
from .records import MAX_PAGE, RecordReader
from .request import RequestContext, Upload
from .service import InspectionService
from .status import ModelStatus
from .training import Growth, Training

__all__ = [
    "DEFAULT_MM_PER_PX", "MAX_PAGE", "ActiveMemories", "Calibration", "DatasetSamples", "Growth", "Inspection",
    "InspectionService", "Inspector", "MemoryCache", "ModelStatus", "RecordReader", "RequestContext", "Training",
    "Upload",
]

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
- ``drift``: do recent scores still look like the calibration (read by the CLI and the console).
- ``overview``: what the console's overview and model pages read (one call per page).
- ``review``: a person's verdict on a record, the review queue, shadow versions (set, summary).
- ``versions``: list a model's versions, activate one (rollback = activating a retired one).
- ``learning``: append reviewed false rejects into a staged version with a proposed calibration.
- ``jobs`` and ``replay``: the job worker (lease, heartbeat) and the replay of a version over records.
- ``service``: ``InspectionService``, which only builds the shared resources, wires the parts and runs the
  life cycle; it adds no logic of its own.

A new part gets a module of its own here; it takes the shared resources it needs in its constructor and is
wired in ``InspectionService.wire()``.

Exported lazily (like ``pipeline`` and ``quality``): an admin command that needs one light part (drift over
the records) does not import the backbone (torch) through the facade.
"""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "DEFAULT_MM_PER_PX": "calibration",
    "Calibration": "calibration",
    "DatasetSamples": "datasets",
    "Inspection": "inspection",
    "Inspector": "inspection",
    "ActiveMemories": "memory",
    "MemoryCache": "memory",
    "MAX_PAGE": "records",
    "RecordReader": "records",
    "RequestContext": "request",
    "Upload": "request",
    "InspectionService": "service",
    "ModelStatus": "status",
    "Growth": "training",
    "Training": "training",
})

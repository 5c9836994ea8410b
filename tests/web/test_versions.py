"""Memory versions: active, staged and retired; activation (rollback); learning from reviewed false rejects."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from service.core import Upload
from service.errors import NotFound
from service.storage.files import HISTORY_FILE
from service.storage.registry.tables import MemoryVersion, Model
from tests.support import both_registries, fit, png_bytes, synthetic_roi

ROLE, ROI = "Master1", "inspection-1"
OK = [synthetic_roi(96, 80, seed) for seed in range(3)]
MORE = [synthetic_roi(96, 80, seed) for seed in range(10, 12)]


@pytest.fixture
def small(make_client, extractor_112):
    """A client at input 112 (8×8 tokens): quick fits."""
    return make_client(extractor_=extractor_112, BDI_INPUT_SIZE="112", BDI_CORESET_RATE="0.25")


def statuses(client, role=ROLE, roi=ROI):
    """Each registered version's status, from the registry rows."""
    service = client.app.state.service
    with service.registry.engine.connect() as connection:
        rows = connection.execute(
            select(MemoryVersion.version, MemoryVersion.status).join(Model, Model.id == MemoryVersion.model_id)
            .where(Model.role_id == role, Model.roi_id == roi).order_by(MemoryVersion.version)
        ).all()
    return dict(rows)


@both_registries
def test_a_fit_without_activation_is_staged_and_its_memory_loads_by_version(small):
    assert fit(small, ROLE, ROI, OK).status_code == 200
    service = small.app.state.service
    staged = service.fit(ROLE, ROI, 0.2, [_upload(image, i) for i, image in enumerate(MORE)], activate=False)
    assert (staged["version"], staged["status"]) == (2, "staged")
    state = service.model_state(ROLE, ROI)
    assert state.active_version == 1  # /infer keeps answering with the active one
    assert statuses(small) == {1: "active", 2: "staged"}

    memories = service.training.memories
    staged_index = memories.of_version(state, 2)
    assert staged_index.memory.shape[0] == staged["coreset_size"]
    assert memories.of_version(state, 2) is staged_index  # cached by model, version and memory sha256
    assert memories.of_version(state, 1) is memories.index(state)
    with pytest.raises(NotFound, match="has no version 7"):
        memories.of_version(state, 7)

    grown = service.append(ROLE, ROI, 0.2, [_upload(OK[0], 9)], activate=False)
    assert (grown["version"], grown["status"], grown["append"]["parent_version"]) == (3, "staged", 1)
    assert statuses(small) == {1: "active", 2: "staged", 3: "staged"}
    refit = service.fit(ROLE, ROI, 0.2, [_upload(image, i) for i, image in enumerate(OK)])
    assert (refit["version"], refit["status"]) == (4, "active")
    assert statuses(small) == {1: "retired", 2: "staged", 3: "staged", 4: "active"}
    folder = service.store.root / state.folder
    assert '"version_status": "staged"' in (folder / HISTORY_FILE).read_text()


def _upload(image: np.ndarray, i: int) -> Upload:
    return Upload(f"ok_{i}.png", png_bytes(image))

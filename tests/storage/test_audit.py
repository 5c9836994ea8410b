"""The audit trail and the API keys in the registry: a change and its audit row commit together or not at all,
keys are kept as hashes and compared in constant time, and a key revoked on one host is refused by another once
its cache expires."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from service.errors import BadRequest, ServiceError
from service.storage import Registry, utc_now
from service.storage import keys as keys_module
from service.storage.audit import AuditEvent, AuditFilter
from service.storage.registry.tables import ApiKey
from tests.support import both_registries


def _registry(tmp_path, database_url: str) -> Registry:
    (tmp_path / "models").mkdir(exist_ok=True)
    registry = Registry(database_url or f"sqlite:///{tmp_path / 'models' / 'registry.sqlite3'}", tmp_path / "models")
    registry.upgrade()
    return registry


@both_registries
def test_a_change_whose_audit_row_fails_is_not_made(tmp_path, database_url):
    registry = _registry(tmp_path, database_url)
    unstorable = AuditEvent("recipe_mm_per_px", actor="anna", details={"what": object()})  # not JSON
    with pytest.raises(Exception):  # noqa: B017 - the JSON encoder's error, whatever the driver wraps it in
        registry.sync_recipe("line2", 0.2, utc_now(), unstorable)
    assert registry.recipes() == {}
    assert registry.audit_log.page(AuditFilter(), 10)[0] == []

    registry.sync_recipe("line2", 0.2, utc_now(), AuditEvent("recipe_mm_per_px", actor="anna", role="setup"))
    assert registry.recipes() == {"line2": 0.2}
    [row], _ = registry.audit_log.page(AuditFilter(), 10)
    assert (row.action, row.actor, row.role, row.recipe_id) == ("recipe_mm_per_px", "anna", "setup", "line2")
    assert row.details == {"mm_per_px_before": None, "mm_per_px_after": 0.2} and row.host


@both_registries
def test_audit_pages_follow_the_keyset_and_filter(tmp_path, database_url):
    registry = _registry(tmp_path, database_url)
    for n in range(5):
        registry.record(AuditEvent("dataset_upload", actor=f"cell-{n % 2}", role_id="R", roi_id=f"roi-{n}"))
    first, cursor = registry.audit_log.page(AuditFilter(), 2)
    second, cursor2 = registry.audit_log.page(AuditFilter(), 2, cursor)
    third, last = registry.audit_log.page(AuditFilter(), 2, cursor2)
    seen = [row.roi_id for row in first + second + third]
    assert seen == [f"roi-{n}" for n in range(4, -1, -1)] and last is None
    assert [row.roi_id for row in registry.audit_log.iterate(AuditFilter(actor="cell-1"), chunk=1)] == ["roi-3", "roi-1"]
    with pytest.raises(BadRequest, match="next_cursor"):
        registry.audit_log.page(AuditFilter(), 2, "not-a-cursor")
    with pytest.raises(ValueError, match="unknown audit action"):
        AuditEvent("dance")


@both_registries
def test_keys_are_kept_as_hashes_and_compared_in_constant_time(tmp_path, database_url, monkeypatch):
    registry = _registry(tmp_path, database_url)
    token = registry.keys.add("cell-3", "setup", AuditEvent("key_add", actor="cli:root"))
    assert len(token) >= 40
    with registry.engine.connect() as connection:
        stored = connection.execute(select(ApiKey.key_sha256, ApiKey.created_by)).one()
    assert stored.key_sha256 == keys_module.hash_key(token) and token not in stored.key_sha256
    assert stored.created_by == "cli:root"
    compared = []
    real = keys_module.hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    identity = registry.keys.identify(token)
    assert identity is not None and (identity.name, identity.role) == ("cell-3", "setup")
    assert compared and all(len(given) == 64 for given, _ in compared)  # hashes, never the token itself
    assert registry.keys.identify(token + "x") is None
    with pytest.raises(ServiceError, match="exists already"):
        registry.keys.add("cell-3", "admin", AuditEvent("key_add"))
    with pytest.raises(BadRequest, match="not one of"):
        registry.keys.add("cell-4", "root", AuditEvent("key_add"))
    actions = [(row.action, row.details) for row in registry.audit_log.iterate(AuditFilter())]
    assert actions == [("key_add", {"key": "cell-3", "key_role": "setup"})]


@both_registries
def test_a_key_revoked_on_one_host_is_refused_by_another_once_its_cache_expires(tmp_path, database_url,
                                                                                  monkeypatch):
    monkeypatch.setattr(keys_module, "KEY_CACHE_TTL_S", 0.3)
    here, there = _registry(tmp_path, database_url), _registry(tmp_path, database_url)
    token = here.keys.add("cell-5", "inspector", AuditEvent("key_add"))
    assert there.keys.identify(token) is not None
    here.keys.revoke("cell-5", AuditEvent("key_revoke", actor="cli:root"))
    assert here.keys.identify(token) is None  # the host that revoked knows at once
    time.sleep(0.35)
    assert there.keys.identify(token) is None
    with pytest.raises(ServiceError, match="revoked already"):
        here.keys.revoke("cell-5", AuditEvent("key_revoke"))
    [info] = here.keys.list()
    assert info.revoked_at is not None
    assert [row.action for row in here.audit_log.iterate(AuditFilter())] == ["key_revoke", "key_add"]

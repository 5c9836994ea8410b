"""``bdi inspections review``, ``bdi review queue`` and ``bdi models shadow`` over the fitted template (Master1 /
inspection-1: versions 1 and 2, 2 active and calibrated) and records inserted straight into the registry."""

from __future__ import annotations

import datetime as dt
import getpass

from service.settings import Settings
from service.storage import RecordStore, open_storage
from service.storage.audit import AuditFilter, AuditLog
from tests.cli.support import PLAIN, as_json, bdi, cli_env
from tests.support import both_registries, make_record

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _records(models_dir) -> RecordStore:
    _, registry = open_storage(Settings.load(cli_env(models_dir)))
    return RecordStore(registry.engine, models_dir)


def _kept(distance: float, seconds: int, decision: str = "ok"):
    return make_record(NOW - dt.timedelta(seconds=seconds), role_id=PLAIN[0], roi_id=PLAIN[1], decision=decision,
                       threshold_distance=distance, image_path=f"@records/x/{seconds}.png", image_bytes=1)


@both_registries
def test_review_a_record_and_walk_the_queue(models_dir):
    store = _records(models_dir)
    near, far, ng = _kept(0.02, 1), _kept(0.3, 2), _kept(0.1, 3, decision="ng")
    store.insert([near, far, ng])

    queue = as_json(bdi(models_dir, "review", "queue", "--json"))
    assert [item["id"] for item in queue] == [near.id, ng.id, far.id]
    table = bdi(models_dir, "review", "queue", "--role", PLAIN[0])
    assert table.exit_code == 0 and near.id in table.output and "score / threshold" in table.output

    reviewed = as_json(bdi(models_dir, "inspections", "review", ng.id, "ok", "--note", "casting mark", "--json"))
    assert (reviewed["outcome"], reviewed["note"]) == ("false_reject", "casting mark")
    assert reviewed["reviewer"] == f"cli:{getpass.getuser()}"
    again = bdi(models_dir, "inspections", "review", ng.id, "ng")
    assert again.exit_code == 0 and "confirmed_ng" in again.output
    assert [item["id"] for item in as_json(bdi(models_dir, "review", "queue", "--json"))] == [near.id, far.id]
    listed = as_json(bdi(models_dir, "inspections", "list", "--json", "--review", "reviewed"))
    assert [(item["id"], item["review"]["outcome"]) for item in listed] == [(ng.id, "confirmed_ng")]
    assert as_json(bdi(models_dir, "inspections", "list", "--json", "--outcome", "false_reject")) == []
    audit, _ = AuditLog(store.engine).page(AuditFilter(action="review"), 10)
    assert [entry.details["outcome"] for entry in audit] == ["confirmed_ng", "false_reject"]
    assert {entry.actor for entry in audit} == {f"cli:{getpass.getuser()}"}

    assert bdi(models_dir, "inspections", "review", ng.id, "maybe").exit_code == 2
    unknown = bdi(models_dir, "inspections", "review", "0" * 32, "ok")
    assert unknown.exit_code == 1 and "no inspection record" in unknown.output


@both_registries
def test_shadow_a_version_compare_and_stop(models_dir):
    empty = bdi(models_dir, "models", "shadow", *PLAIN)
    assert empty.exit_code == 0 and "has no shadow version" in empty.output
    active = bdi(models_dir, "models", "shadow", *PLAIN, "2")
    assert active.exit_code == 1 and "active version" in active.output
    assert bdi(models_dir, "models", "shadow", *PLAIN, "7").exit_code == 1
    assert bdi(models_dir, "models", "shadow", *PLAIN, "1", "--stop").exit_code == 2

    started = as_json(bdi(models_dir, "models", "shadow", *PLAIN, "1", "--json"))
    assert started["version"] == 1 and started["since"]
    store = _records(models_dir)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    store.insert([
        make_record(later, role_id=PLAIN[0], roi_id=PLAIN[1], decision=decision, shadow_version=1, shadow_score=0.4,
                    shadow_decision=shadow)
        for decision, shadow in (("ok", "ok"), ("ok", "ng"), ("ng", "ok"), ("ng", "ok"), ("ng", "ng"))
    ] + [make_record(later, role_id=PLAIN[0], roi_id=PLAIN[1], decision="ok")])  # a record the shadow did not score
    summary = as_json(bdi(models_dir, "models", "shadow", *PLAIN, "--json"))
    assert summary == {"version": 1, "since": started["since"], "n": 5, "agree": 2, "ok_to_ng": 1, "ng_to_ok": 2}
    table = bdi(models_dir, "models", "shadow", *PLAIN)
    assert table.exit_code == 0 and "Shadow version 1" in table.output

    stopped = bdi(models_dir, "models", "shadow", *PLAIN, "--stop")
    assert stopped.exit_code == 0 and "no shadow version now" in stopped.output
    audit, _ = AuditLog(store.engine).page(AuditFilter(action="shadow"), 10)
    assert [entry.details["shadow_after"] for entry in audit] == [None, 1]

"""``bdi keys`` and ``bdi audit``: a key printed once and kept only as a hash, revoked by name; the CLI's own
changes (rollback, delete, import, keys) in the audit trail under ``cli:<OS user>``; the trail listed and
exported."""

from __future__ import annotations

import csv
import getpass
import json

from tests.cli.support import ODD, PLAIN, as_json, bdi
from tests.support import both_registries

ACTOR = f"cli:{getpass.getuser()}"


@both_registries
def test_keys_add_list_revoke_and_their_audit_rows(models_dir):
    added = as_json(bdi(models_dir, "keys", "add", "cell-3-gui", "--role", "inspector", "--json"))
    assert set(added) == {"name", "role", "key"} and added["role"] == "inspector" and len(added["key"]) >= 40
    plain = bdi(models_dir, "keys", "add", "line2-setup", "--role", "setup")
    assert plain.exit_code == 0 and "shown only this once" in plain.stderr
    listed = bdi(models_dir, "keys", "list", "--json")
    assert added["key"] not in listed.stdout and plain.stdout.strip() not in listed.stdout
    assert [(k["name"], k["role"], k["created_by"], k["revoked_at"]) for k in json.loads(listed.stdout)] == [
        ("cell-3-gui", "inspector", ACTOR, None), ("line2-setup", "setup", ACTOR, None)]
    assert bdi(models_dir, "keys", "revoke", "cell-3-gui").exit_code == 0
    again = bdi(models_dir, "keys", "revoke", "cell-3-gui")
    assert again.exit_code == 1 and "revoked already" in again.stderr
    unknown = bdi(models_dir, "keys", "revoke", "nobody")
    assert unknown.exit_code == 1 and "no key is named 'nobody'" in unknown.stderr
    wrong = bdi(models_dir, "keys", "add", "x", "--role", "root")
    assert wrong.exit_code == 2
    trail = as_json(bdi(models_dir, "audit", "list", "--actor", ACTOR, "--json"))
    assert [(row["action"], row["actor"], row["role"], row["details"]["key"]) for row in trail] == [
        ("key_revoke", ACTOR, None, "cell-3-gui"), ("key_add", ACTOR, None, "line2-setup"),
        ("key_add", ACTOR, None, "cell-3-gui")]
    assert all(added["key"] not in json.dumps(row) for row in trail)


@both_registries
def test_rollback_delete_and_import_are_audited_and_exported(models_dir, tmp_path):
    assert bdi(models_dir, "models", "rollback", *PLAIN, "1").exit_code == 0
    bundle = tmp_path / "plain.bdimodel"
    assert bdi(models_dir, "models", "export", *PLAIN, "-o", str(bundle)).exit_code == 0
    assert bdi(models_dir, "models", "import", str(bundle), "--as", "/".join(ODD)).exit_code == 0
    assert bdi(models_dir, "models", "delete", *PLAIN, "--yes").exit_code == 0
    rows = as_json(bdi(models_dir, "audit", "list", "--actor", ACTOR, "--json"))  # not the fixture's fits
    assert [row["action"] for row in rows] == ["delete", "import", "rollback"]
    delete, imported, rollback = rows
    assert (rollback["version_before"], rollback["version_after"], rollback["role_id"]) == (2, 1, PLAIN[0])
    assert rollback["threshold_before"] == rollback["threshold_after"] is not None
    assert (imported["role_id"], imported["roi_id"], imported["version_before"], imported["version_after"]) == (
        *ODD, 1, 2)
    assert imported["threshold_before"] is None and imported["threshold_after"] is not None
    assert (delete["version_before"], delete["threshold_before"]) == (1, rollback["threshold_after"])
    assert {row["actor"] for row in rows} == {ACTOR} and all(row["host"] for row in rows)

    only = as_json(bdi(models_dir, "audit", "list", "--action", "rollback", "--json"))
    assert [row["action"] for row in only] == ["rollback"]
    out = tmp_path / "audit.csv"
    assert bdi(models_dir, "audit", "export", "--role", PLAIN[0], "--actor", ACTOR, "-o", str(out)).exit_code == 0
    with open(out, newline="", encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    assert [row["action"] for row in exported] == ["delete", "rollback"] and exported[0]["actor"] == ACTOR
    lines = tmp_path / "audit.jsonl"
    assert bdi(models_dir, "audit", "export", "--format", "jsonl", "--actor", ACTOR, "-o", str(lines)).exit_code == 0
    assert [json.loads(line)["action"] for line in lines.read_text().splitlines()] == ["delete", "import", "rollback"]

"""`bdi inspections list --after-seq N`: the records written after N, oldest write first, a late one included,
and the N to follow on with."""

from __future__ import annotations

import datetime as dt
import json

from tests.cli.support import bdi
from tests.cli.test_inspections import _records
from tests.support import both_registries, make_record

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)


@both_registries
def test_bdi_inspections_list_after_seq_follows_in_write_order(models_dir):
    store = _records(models_dir)
    store.insert([make_record(T0 + dt.timedelta(minutes=i), part_id=f"P{i}") for i in range(3)])
    followed = bdi(models_dir, "inspections", "list", "--after-seq", "0", "--limit", "2", "--json")
    assert followed.exit_code == 0, followed.output
    page = json.loads(followed.stdout)
    assert [item["part_id"] for item in page["items"]] == ["P0", "P1"]
    store.insert([make_record(T0 - dt.timedelta(hours=1), part_id="late")])
    table = bdi(models_dir, "inspections", "list", "--after-seq", str(page["next_after_seq"]))
    assert table.exit_code == 0 and "P2" in table.stdout and "late" in table.stdout and "P0" not in table.stdout
    assert f"--after-seq {page['next_after_seq'] + 2}" in table.stderr

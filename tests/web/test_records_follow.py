"""Following the records by write sequence over HTTP and the CLI: GET /inspections?after_seq=N and
`bdi inspections list --after-seq N` list each record once, oldest write first, a record written late included
(paging by time would miss it). The CLI's side: tests/cli/test_inspections_follow.py."""

from __future__ import annotations

import datetime as dt

from tests.support import both_registries, make_record

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)


def _get(client, **params):
    response = client.get("/inspections", params=params)
    assert response.status_code == 200, response.text
    return response.json()


@both_registries
def test_following_by_after_seq_lists_each_record_once_in_write_order_a_late_one_included(make_client, tmp_path):
    client = make_client()
    records = client.app.state.service.records
    records.insert([make_record(T0 + dt.timedelta(minutes=i), part_id=f"P{i}") for i in range(3)])

    first = _get(client, after_seq=0, limit=2)
    assert [item["part_id"] for item in first["items"]] == ["P0", "P1"] and first["next_cursor"] is None
    second = _get(client, after_seq=first["next_after_seq"], limit=2)
    assert [item["part_id"] for item in second["items"]] == ["P2"]
    newest_by_time = _get(client, limit=1)
    assert newest_by_time["next_after_seq"] is None and newest_by_time["items"][0]["part_id"] == "P2"

    records.insert([make_record(T0 - dt.timedelta(hours=1), part_id="late"),  # stamped before all the others
                    make_record(T0 + dt.timedelta(hours=1), role_id="Other", part_id="other role")])
    since_p2 = _get(client, since=newest_by_time["items"][0]["created_at"])
    assert "late" not in [item["part_id"] for item in since_p2["items"]]  # paging by time misses it
    third = _get(client, after_seq=second["next_after_seq"], role_id="R")
    assert [item["part_id"] for item in third["items"]] == ["late"]
    assert _get(client, after_seq=third["next_after_seq"]) == {"items": [], "next_cursor": None,
                                                              "next_after_seq": third["next_after_seq"]}

    negative = client.get("/inspections", params={"after_seq": -1})
    assert negative.status_code == 400 and "after_seq must be 0 or a sequence number" in negative.json()["error"]
    both = client.get("/inspections", params={"after_seq": 0, "cursor": newest_by_time["next_cursor"]})
    assert both.status_code == 400 and "either `cursor`" in both.json()["error"]

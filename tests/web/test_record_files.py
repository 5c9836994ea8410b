"""A kept image or heatmap that is gone or was left empty (a crash between creating and writing it) answers
404 "no longer on disk", never 200 with no bytes."""

from __future__ import annotations

import datetime as dt

from tests.support import make_record

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)


def test_an_empty_or_missing_kept_image_is_no_longer_on_disk(make_client, tmp_path):
    client = make_client()
    service = client.app.state.service
    kept = service.settings.models_dir / "records-test"
    kept.mkdir()
    (kept / "whole.png").write_bytes(b"\x89PNG image")
    (kept / "empty.png").write_bytes(b"")
    whole, empty, gone = (make_record(T0, image_path=f"records-test/{name}.png") for name in ("whole", "empty", "gone"))
    service.records.insert([whole, empty, gone])

    assert client.get(f"/inspections/{whole.id}/image").content == b"\x89PNG image"
    for record in (empty, gone):
        response = client.get(f"/inspections/{record.id}/image")
        assert response.status_code == 404, response.status_code
        assert "is no longer on disk" in response.json()["error"]

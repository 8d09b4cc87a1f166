"""kubectl dsr receipts (pure): filters, one row per receipt across its parts, CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from mixpanel_dsr.plugin import receipts_command as view


def receipt(name: str, request: str, completed: str, *, part: int = 1, parts: int = 1,
            project: str = "web", tasks: int = 1) -> dict[str, object]:  # fmt: skip
    return {
        "metadata": {"name": name, "namespace": "privacy"},
        "spec": {
            "request": {"namespace": "privacy", "name": request, "uid": f"uid-{request}"},
            "project": {"name": project, "region": "EU"},
            "type": "Deletion",
            "outcome": "Succeeded",
            "completedAt": completed,
            "deadlineMet": True,
            "idCount": 3,
            "part": part,
            "parts": parts,
            "labels": {"privacy.example.com/ticket": f"T-{request}"},
            "tasks": [{"name": f"t{i}"} for i in range(tasks)],
        },
    }


ITEMS = [
    receipt("b-2", "b", "2026-11-20T00:00:00Z", part=2, parts=2, tasks=25),
    receipt("a", "a", "2026-11-10T00:00:00Z", project="app"),
    receipt("b", "b", "2026-11-20T00:00:00Z", part=1, parts=2, tasks=25),
]


def test_parts_of_one_receipt_make_one_row() -> None:
    table = view.rows(view.selected(ITEMS))
    assert [(r["request"], r["tasks"], r["receipt"]) for r in table] == [
        ("a", 1, "a"),
        ("b", 50, "b"),
    ]


def test_filters_by_project_request_and_completion_time() -> None:
    assert [r["request"] for r in view.rows(view.selected(ITEMS, project="app"))] == ["a"]
    assert [r["request"] for r in view.rows(view.selected(ITEMS, request="b"))] == ["b"]
    since = datetime(2026, 11, 15, tzinfo=UTC)
    assert [r["request"] for r in view.rows(view.selected(ITEMS, since=since))] == ["b"]
    assert [r["request"] for r in view.rows(view.selected(ITEMS, until=since))] == ["a"]


def test_csv_has_every_column_and_the_ticket() -> None:
    text = view.render(view.rows(view.selected(ITEMS)), "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == view.COLUMNS
    assert rows[1]["labels"] == "privacy.example.com/ticket=T-b"
    assert rows[1]["deadlineMet"] == "True"


def test_an_id_asked_about_is_shown_only_as_a_hash() -> None:
    assert "alice" not in view.id_label("alice")
    assert view.id_label("alice") == view.id_label("alice")
    assert view.describe([]) == "no receipt holds this id\n"

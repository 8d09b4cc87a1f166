"""How the docs test finds shell commands in the docs and makes them safe to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.doc_commands import DocCommand, Refused, from_markdown, from_notes, plan

DOC = """# Page

```sh
kubectl get dsr -A -w       # watch
kubectl wait --for=condition=Ready dsr/x -n privacy --timeout=720h
kubectl create secret generic s -n privacy --from-literal=token=x \\
  --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f - <<'EOF'
kind: Thing
EOF
helm install dsr charts/c -n ns --create-namespace --set a=b
```

```console
$ kubectl dsr status -n privacy
NAME   PHASE
$ curl -s -d '{"a": 1,
    "b": 2}'
{"ok": true}
```

```yaml
kubectl: not a command
```
"""


def _commands(tmp_path: Path) -> list[DocCommand]:
    page = tmp_path / "page.md"
    page.write_text(DOC)
    return from_markdown(page, tmp_path)


def test_commands_come_with_continuations_heredocs_and_multi_line_quotes(tmp_path: Path) -> None:
    commands = _commands(tmp_path)
    assert [c.source for c in commands] == [
        "page.md:4", "page.md:5", "page.md:6", "page.md:8", "page.md:11",
        "page.md:15", "page.md:17",
    ]  # fmt: skip
    assert commands[3].text == "kubectl apply -f - <<'EOF'\nkind: Thing\nEOF"
    assert commands[6].text.endswith('"b": 2}\'')


def test_reads_run_as_written_writes_as_server_dry_runs_installs_as_templates(
    tmp_path: Path,
) -> None:
    planned = [plan(c) for c in _commands(tmp_path)[:6]]
    assert planned == [
        "kubectl get dsr -A",
        "kubectl wait --for=condition=Ready dsr/x -n privacy --timeout=60s",
        "kubectl create secret generic s -n privacy --from-literal=token=x --dry-run=client "
        "-o yaml | kubectl apply -f - --dry-run=server",
        "kubectl apply -f - --dry-run=server <<'EOF'\nkind: Thing\nEOF",
        "helm template dsr charts/c -n ns --set a=b",
        "kubectl dsr status -n privacy",
    ]


def test_output_into_a_file_of_the_working_folder_is_kept() -> None:
    command = DocCommand("x:1", "kubectl dsr receipts -A -o csv > receipts.csv")
    assert plan(command) == "kubectl dsr receipts -A -o csv > receipts.csv"


def test_intake_runs_only_where_it_creates_nothing() -> None:
    dry = DocCommand("x:1", "kubectl dsr intake t.csv -n privacy --project web-us --dry-run")
    assert plan(dry) == dry.text
    with pytest.raises(Refused):
        plan(DocCommand("x:1", "kubectl dsr intake t.csv -n privacy --project web-us"))


def test_a_timeout_kubectl_would_refuse_is_kept_so_the_run_fails() -> None:
    command = DocCommand("x:1", "kubectl wait --for=condition=Ready dsr/x --timeout=30d")
    assert plan(command).endswith("--timeout=30d")


@pytest.mark.parametrize(
    "text",
    [
        "curl -s http://example.com",
        "kubectl dsr cancel x -y",
        "kubectl exec x -- sh",
        "make demo",
        "kubectl create secret generic s --dry-run=client -o yaml > /etc/s.yaml",
    ],
)
def test_commands_without_a_safe_rule_are_refused(text: str) -> None:
    with pytest.raises(Refused):
        plan(DocCommand("x:1", text))


def test_notes_commands_are_dedented_as_a_reader_selects_them() -> None:
    notes = "Intro\n\n   kubectl get dsr -A\n   kubectl apply -f - <<'EOF'\n   kind: X\n   EOF\n"
    commands = from_notes(notes, "NOTES")
    assert [c.text for c in commands] == [
        "kubectl get dsr -A",
        "kubectl apply -f - <<'EOF'\nkind: X\nEOF",
    ]

"""Shell commands as the docs show them, and how the docs test runs them safely.

Commands come from the fenced ``sh``/``bash``/``shell`` blocks (every line is a
command) and ``console`` blocks (lines after ``$ ``; the rest is output) of
README.md and docs/*.md, and from the rendered chart NOTES (indented lines
that start with ``kubectl``/``helm``, dedented as a reader selects them). A
trailing ``\\`` continues a command; a here-document runs to its terminator.

:func:`plan` turns a command into what the test runs against the real control
plane, or refuses it. Reading runs as written (``-w`` dropped, ``wait``
timeouts capped); writing runs with ``--dry-run=server`` (so admission and the
schema check it); ``helm install`` runs as ``helm template`` with the same
arguments; output redirected into a file lands in the test's working folder.
Whatever matches no rule must be in the reviewed skip list of the test, with
the reason.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGS = {"sh", "bash", "shell", "console"}
_FENCE = re.compile(r"^([ \t]*)```(\S*)[^\n]*\n(.*?)^\1```", re.S | re.M)
_HEREDOC = re.compile(r"<<-?\s*'?\"?(\w+)'?\"?")

#: kubectl verbs that only read.
READ_VERBS = {"get", "describe", "explain", "api-resources", "api-versions", "version", "wait"}
#: kubectl verbs that write: run with --dry-run=server.
WRITE_VERBS = {"apply", "create", "patch", "delete", "label", "annotate", "replace"}
#: kubectl dsr commands that only read or print.
DSR_READ = {"status", "wait", "completion", "receipts"}
#: The longest wait the test gives a documented ``--timeout``.
WAIT_CAP = "60s"


@dataclass(frozen=True)
class DocCommand:
    source: str  # file:line
    text: str  # as a reader pastes it (continuations and here-document included)

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0].strip()


def _closed(text: str) -> bool:
    """False while a quote opened in ``text`` is still open (the command goes on)."""
    try:
        shlex.split(_HEREDOC.split(text)[0], comments=True)
    except ValueError:
        return False
    return True


def _commands_in_lines(lines: list[str], *, console: bool) -> list[tuple[int, str]]:
    """(offset of the first line, command text) for each command in a block's lines."""
    found: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if console:
            if not line.startswith("$ "):
                i += 1
                continue
            line = line[2:]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        start, text = i, [line]
        while i + 1 < len(lines) and (
            text[-1].rstrip().endswith("\\") or not _closed("\n".join(text))
        ):
            i += 1
            text.append(lines[i])
        heredoc = _HEREDOC.search(text[0])
        if heredoc:
            while i + 1 < len(lines):
                i += 1
                text.append(lines[i])
                if lines[i].strip() == heredoc.group(1):
                    break
        found.append((start, "\n".join(text)))
        i += 1
    return found


def from_markdown(path: Path, root: Path) -> list[DocCommand]:
    text = path.read_text()
    commands = []
    for block in _FENCE.finditer(text):
        lang = block.group(2).lower()
        if lang not in SHELL_LANGS:
            continue
        first = text[: block.start(3)].count("\n") + 1
        # A block inside a list item is indented; a reader copies it without the indent.
        lines = textwrap.dedent(block.group(3)).splitlines()
        for offset, command in _commands_in_lines(lines, console=lang == "console"):
            commands.append(DocCommand(f"{path.relative_to(root)}:{first + offset}", command))
    return commands


def from_notes(notes: str, source: str) -> list[DocCommand]:
    """Commands in rendered NOTES: indented blocks whose first line starts with kubectl/helm."""
    lines = notes.splitlines()
    commands = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if lines[i].startswith(" ") and stripped.split(" ")[0] in {"kubectl", "helm"}:
            indent = len(lines[i]) - len(lines[i].lstrip())
            block = []
            j = i
            while j < len(lines) and (lines[j].startswith(" " * indent) or not lines[j].strip()):
                if not lines[j].strip():
                    break
                block.append(lines[j])
                j += 1
            dedented = textwrap.dedent("\n".join(block)).splitlines()
            for offset, command in _commands_in_lines(dedented, console=False):
                commands.append(DocCommand(f"{source}:{i + offset + 1}", command))
            i = j
        else:
            i += 1
    return commands


# ---------------------------------------------------------------------- running them safely


class Refused(Exception):
    """No rule runs this command safely."""


def _split_comment(line: str) -> tuple[str, str]:
    """(command, trailing ``# comment``), the comment found outside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i:]
    return line.rstrip(), ""


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment)
    except ValueError as exc:
        raise Refused(f"cannot split {segment!r}: {exc}") from exc


_GO_DURATION = re.compile(r"0|([0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+")


def _cap_timeouts(segment: str) -> str:
    """Documented ``--timeout``s shortened to WAIT_CAP; one kubectl would refuse stays, to fail."""

    def cap(match: re.Match[str]) -> str:
        valid = _GO_DURATION.fullmatch(match.group(1))
        return f"--timeout={WAIT_CAP}" if valid else match.group(0)

    return re.sub(r"--timeout[= ](\S+)", cap, segment)


def _plan_kubectl(segment: str, words: list[str]) -> str:
    args = words[1:]
    if args and args[0] == "dsr":
        sub = args[1] if len(args) > 1 else ""
        if sub == "intake" and {"--dry-run", "--dir", "-o"} & set(args):
            return segment  # plans, prints or writes files; creates nothing
        if sub not in DSR_READ:
            raise Refused(f"kubectl dsr {sub} changes the cluster")
        return _cap_timeouts(segment)
    verb = next((a for a in args if not a.startswith("-")), "")
    if verb == "auth" and len(args) > 1 and args[1] in {"can-i", "whoami"}:
        return segment
    if verb in READ_VERBS:
        return _cap_timeouts(re.sub(r"\s(-w|--watch)(?=\s|$)", "", segment))
    if verb in WRITE_VERBS:
        if "--dry-run" in segment:
            return segment
        return f"{segment} --dry-run=server"
    raise Refused(f"kubectl {verb}: no rule")


def _plan_helm(segment: str, words: list[str]) -> str:
    verb = words[1] if len(words) > 1 else ""
    if verb in {"template", "lint", "show"}:
        return segment
    if verb in {"install", "upgrade"}:
        segment = re.sub(r"\bhelm\s+(install|upgrade)\b", "helm template", segment, count=1)
        return re.sub(r"\s(--create-namespace|--wait|--atomic|--install|-i)(?=\s|$)", "", segment)
    raise Refused(f"helm {verb}: no rule")


def _split_redirect(segment: str) -> tuple[str, str]:
    """(command, `` > FILE``): output may go only into a file of the working folder."""
    found = re.search(r"\s(>>?)\s*(\S+)$", segment)
    if not found:
        if re.search(r"(^|\s)>", segment):
            raise Refused("redirects output in a way the test does not follow")
        return segment, ""
    if "/" in found.group(2):
        raise Refused("writes a file outside the working folder")
    return segment[: found.start()], found.group(0)


def plan(command: DocCommand) -> str:
    """The shell text the test runs for ``command``; raises :class:`Refused`."""
    lines = command.text.splitlines()
    # The command line with its continuations joined; a here-document's body kept as it is.
    head: list[str] = []
    body: list[str] = []
    for n, line in enumerate(lines):
        head.append(line.rstrip().removesuffix("\\").strip())
        if not line.rstrip().endswith("\\"):
            body = lines[n + 1 :]
            break
    joined, _comment = _split_comment(" ".join(head))
    heredoc = _HEREDOC.search(joined)
    tail = joined[heredoc.start() :] if heredoc else ""
    joined = joined[: heredoc.start()].rstrip() if heredoc else joined
    planned = []
    for segment in joined.split(" | "):
        segment, redirect = _split_redirect(segment.strip())
        words = _words(segment)
        if not words:
            raise Refused("empty")
        if words[0] == "kubectl":
            planned.append(_plan_kubectl(segment, words) + redirect)
        elif words[0] == "helm":
            planned.append(_plan_helm(segment, words) + redirect)
        elif re.fullmatch(r"(source <\()?kubectl-dsr completion bash\)?", segment):
            planned.append(segment + redirect)
        elif words[0] == "shred" and words[-1] == Path(words[-1]).name:
            planned.append(segment + redirect)  # a file in the working folder
        else:
            raise Refused(f"{words[0]}: no rule")
    last = " | ".join(planned) + (f" {tail}" if tail else "")
    return "\n".join([last, *body])

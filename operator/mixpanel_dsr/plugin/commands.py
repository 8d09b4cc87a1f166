"""``kubectl dsr``: file, follow, retry and cancel DataSubjectRequests from a terminal.

Installed as ``kubectl-dsr`` (kubectl finds it on PATH as the ``dsr`` plugin); also
``python -m mixpanel_dsr.plugin``. Exit codes: 0 ok, 1 failure or refusal, 2 usage error
(and ``wait`` timing out). Expected failures print ``error: ...`` on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as TransportError

from mixpanel_dsr import __version__
from mixpanel_dsr.api import GROUP, VERSION
from mixpanel_dsr.api.models import RequestType
from mixpanel_dsr.plugin import core, intake_command, receipts_command
from mixpanel_dsr.plugin.cluster import (
    DSR_KIND,
    DSR_PLURAL,
    TIMEOUT,
    Cluster,
    api_message,
    as_object,
)
from mixpanel_dsr.plugin.core import PluginError

DEFAULT_OPERATOR_NAMESPACE = "mixpanel-dsr-system"


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _note(message: str) -> None:
    print(message, file=sys.stderr)


# --------------------------------------------------------------------------- new


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PluginError(f"{path} is not UTF-8 text") from None
    except OSError as err:
        raise PluginError(f"cannot read {path}: {err.strerror}") from None


def _serialize(cluster: Cluster, obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = cluster.api.sanitize_for_serialization(obj)
    return data


def cmd_new(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if bool(args.csv) != bool(args.csv_column):
        parser.error("--csv and --csv-column go together")
    if args.ids:
        raw = core.ids_from_args(args.ids)
    elif args.ids_file:
        raw = core.ids_from_text(_read(args.ids_file))
    else:
        raw = core.ids_from_csv(_read(args.csv), args.csv_column)
    ids = core.distinct_ids(raw)
    if len(ids) < len(raw):
        _note(f"{len(raw) - len(ids)} repeated ids left out: {len(ids)} distinct ids")
    talk = args.apply or args.dry_run_server
    cluster = Cluster(args.kubeconfig, args.context) if talk else None
    namespace = args.namespace or (cluster.namespace if cluster else None)
    request = core.NewRequest(
        name=args.name,
        project=args.project,
        type=args.type,
        namespace=namespace,
        cluster_project=args.cluster_project,
        compliance=args.compliance,
        disclosure=args.disclosure,
        received_at=args.received_at,
        requested_by=args.requested_by,
    )
    manifests = core.build_manifests(request, ids)
    if cluster is None:
        sys.stdout.write(core.render(core.as_document(manifests), args.output or "yaml"))
        return 0
    assert namespace is not None
    created = _create(cluster, namespace, manifests, dry_run=args.dry_run_server)
    if args.output:
        sys.stdout.write(core.render(core.as_document(created), args.output))
        return 0
    suffix = " (server dry run)" if args.dry_run_server else ""
    for obj in created:
        kind = "secret" if obj.get("kind") == "Secret" else DSR_KIND
        print(f"{kind}/{obj['metadata']['name']} created{suffix}")
    due = core.request_deadline(created[-1])
    if due and not args.dry_run_server:
        _note(f"statutory deadline {core.rfc3339(due)} ({core.how_far(due, datetime.now(UTC))})")
    return 0


def _create(
    cluster: Cluster, namespace: str, manifests: Sequence[dict[str, Any]], *, dry_run: bool
) -> list[dict[str, Any]]:
    """The ids Secret (if any), then the request; the Secret is then owned by the request
    (removed with it). A request refused by the API server takes its new Secret with it."""
    dry = "All" if dry_run else None
    *secrets, manifest = manifests
    created: list[dict[str, Any]] = []
    for secret in secrets:
        body = client.V1Secret.from_dict(secret)
        assert body is not None
        made = cluster.core.create_namespaced_secret(
            namespace, body, dry_run=dry, _request_timeout=TIMEOUT
        )
        created.append(_serialize(cluster, made))
    try:
        request = as_object(
            cluster.custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                DSR_PLURAL,
                manifest,
                dry_run=dry,
                _request_timeout=TIMEOUT,
            )
        )
    except ApiException:
        if not dry_run:
            for secret in created:
                with contextlib.suppress(ApiException):  # the request's refusal matters more
                    cluster.core.delete_namespaced_secret(
                        secret["metadata"]["name"], namespace, _request_timeout=TIMEOUT
                    )
        raise
    if not dry_run:
        owner = {
            "apiVersion": request["apiVersion"],
            "kind": request["kind"],
            "name": request["metadata"]["name"],
            "uid": request["metadata"]["uid"],
        }
        for secret in created:
            try:
                cluster.core.patch_namespaced_secret(
                    secret["metadata"]["name"],
                    namespace,
                    {"metadata": {"ownerReferences": [owner]}},
                    _request_timeout=TIMEOUT,
                    _content_type="application/merge-patch+json",
                )
            except ApiException as err:
                _note(
                    f"warning: secret/{secret['metadata']['name']} is not owned by the request "
                    f"({api_message(err)}): delete it yourself once the request is gone"
                )
    return [*created, request]


# --------------------------------------------------------------------------- status


def _scope(args: argparse.Namespace, cluster: Cluster) -> str | None:
    """The namespace to look in; None for every namespace (-A)."""
    if args.all_namespaces:
        return None
    return str(args.namespace or cluster.namespace)


def cmd_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.name and args.all_namespaces:
        parser.error("a request name cannot be looked up across all namespaces (-A)")
    cluster = Cluster(args.kubeconfig, args.context)
    now = datetime.now(UTC)
    if args.name:
        namespace = args.namespace or cluster.namespace
        obj = cluster.get_request(namespace, args.name)
        task_ns = core.task_namespace(obj, args.operator_namespace)
        names = list(dict.fromkeys(t["name"] for t in (obj.get("status") or {}).get("tasks") or []))
        view = core.detail(obj, cluster.tasks(task_ns, names), task_ns, now)
        if args.output in ("json", "yaml"):
            sys.stdout.write(core.render(view, args.output))
        else:
            print(core.render_detail(view, wide=args.output == "wide"))
        return 0
    scope = _scope(args, cluster)
    rows = core.order_requests(core.request_row(o) for o in cluster.list_requests(scope))
    summary = core.summarize(rows)
    at_risk = [r for r in rows if r.risk]
    if args.output in ("json", "yaml"):
        doc = {
            "atRisk": [_row_doc(r, now) for r in at_risk],
            "summary": [
                {
                    "project": s.project,
                    "phase": s.phase,
                    "requests": s.requests,
                    "idsDone": s.done,
                    "idsTotal": s.total,
                    "atRisk": s.at_risk,
                }
                for s in summary
            ],
            "requests": [_row_doc(r, now) for r in rows],
        }
        sys.stdout.write(core.render(doc, args.output))
        return 0
    if not rows:
        where = "any namespace" if scope is None else f"namespace {scope}"
        _note(f"No DataSubjectRequests in {where}.")
        return 0
    if at_risk:
        print(f"AT RISK ({len(at_risk)})")
        print(_request_table(at_risk, now, wide=True))
        print()
    print(
        core.table(
            ["PROJECT", "PHASE", "REQUESTS", "IDS DONE", "AT RISK"],
            [[s.project, s.phase, s.requests, f"{s.done}/{s.total}", s.at_risk] for s in summary],
        )
    )
    if args.output == "wide":
        print()
        print(_request_table(rows, now, wide=True))
    return 0


def _row_doc(row: core.RequestRow, now: datetime) -> dict[str, Any]:
    return {
        "namespace": row.namespace,
        "name": row.name,
        "project": row.project,
        "type": row.type,
        "phase": row.phase or None,
        "idsDone": row.done,
        "idsTotal": row.total,
        "idsFailed": row.failed,
        "deadline": core.rfc3339(row.deadline) if row.deadline else None,
        "deadlineIn": core.how_far(row.deadline, now) if row.deadline else None,
        "deadlineAtRisk": row.risk,
    }


def _request_table(rows: Sequence[core.RequestRow], now: datetime, *, wide: bool) -> str:
    headers = ["NAMESPACE", "NAME", "PROJECT", "TYPE", "PHASE", "DONE", "DEADLINE"]
    if wide:
        headers.append("RISK")
    lines = []
    for r in rows:
        line: list[object] = [
            r.namespace,
            r.name,
            r.project,
            r.type,
            r.phase or "<none>",
            f"{r.done}/{r.total}",
            core.how_far(r.deadline, now) if r.deadline else "<unknown>",
        ]
        if wide:
            line.append(r.risk or "-")
        lines.append(line)
    return core.table(headers, lines)


# --------------------------------------------------------------------------- wait


def _sleep_until(deadline: float, interval: float) -> bool:
    """Sleep ``interval`` (or less); False once ``deadline`` (monotonic) has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    time.sleep(min(interval, left))
    return True


def _key(obj: dict[str, Any]) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def cmd_wait(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.names and args.all_namespaces:
        parser.error("request names cannot be looked up across all namespaces (-A)")
    cluster = Cluster(args.kubeconfig, args.context)
    scope = _scope(args, cluster)
    # The requests to wait for, fixed at the start by uid: a deleted (or deleted and
    # re-created) one counts as not succeeded.
    first = {_key(o): o for o in cluster.list_requests(scope)}
    if args.names:
        keys = [f"{scope}/{n}" for n in dict.fromkeys(args.names)]
        missing = [k.split("/", 1)[1] for k in keys if k not in first]
        if missing:
            raise PluginError(
                f"{DSR_PLURAL}.{GROUP} {', '.join(repr(n) for n in missing)} not found "
                f"in namespace {scope}"
            )
        first = {k: first[k] for k in keys}
    if not first:
        where = "any namespace" if scope is None else f"namespace {scope}"
        raise PluginError(f"no DataSubjectRequests in {where} to wait for")
    uids = {key: obj["metadata"]["uid"] for key, obj in first.items()}
    deadline = time.monotonic() + args.timeout.total_seconds()
    tty = sys.stderr.isatty()
    last_line = ""
    current = first
    while True:
        rows = [core.request_row(o) for o in current.values()]
        gone = len(uids) - len(current)
        line = core.progress_line(rows, gone)
        if line != last_line:
            print(
                f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True
            )
            last_line = line
        if all(r.finished for r in rows):
            break
        if not _sleep_until(deadline, args.interval.total_seconds()):
            if tty:
                print(file=sys.stderr)
            _error(f"timed out after {core.span(args.timeout.total_seconds())}: {line}")
            return 2
        current = {
            _key(o): o
            for o in cluster.list_requests(scope)
            if uids.get(_key(o)) == o["metadata"]["uid"]
        }
    if tty:
        print(file=sys.stderr)
    ok = True
    for key in uids:
        obj = current.get(key)
        shown = key if scope is None else key.split("/", 1)[1]
        if obj is None:
            print(f"{DSR_KIND}/{shown} deleted")
            ok = False
            continue
        row = core.request_row(obj)
        reason = ""
        if row.phase != "Succeeded":
            ok = False
            cond = core.condition(obj, "Stalled") or core.condition(obj, "Ready") or {}
            reason = f": {cond.get('reason', '')} {cond.get('message', '')}".rstrip()
        print(f"{DSR_KIND}/{shown} {row.phase}{reason}")
    return 0 if ok else 1


# --------------------------------------------------------------------------- retry


def cmd_retry(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cluster = Cluster(args.kubeconfig, args.context)
    namespace = args.namespace or cluster.namespace
    obj = cluster.get_request(namespace, args.name)
    phase = (obj.get("status") or {}).get("phase")
    if phase != "Failed":
        raise PluginError(
            f"{args.name} is {phase or 'not started'}: only a Failed request can be retried"
        )
    value = core.rfc3339(datetime.now(UTC))
    if ((obj["metadata"].get("annotations") or {}).get(core.RETRY_ANNOTATION)) == value:
        value = core.rfc3339(datetime.now(UTC) + timedelta(microseconds=1))
    cluster.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        DSR_PLURAL,
        args.name,
        {"metadata": {"annotations": {core.RETRY_ANNOTATION: value}}},
        _request_timeout=TIMEOUT,
        _content_type="application/merge-patch+json",
    )
    print(
        f"{DSR_KIND}/{args.name} annotated {core.RETRY_ANNOTATION}={value}: "
        "the operator sends its failed ids again"
    )
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout.total_seconds()
    while True:
        status = cluster.get_request(namespace, args.name).get("status") or {}
        if (status.get("lastRetry") or {}).get("token") == value:
            print(f"{DSR_KIND}/{args.name} retry taken up: now {status.get('phase')}")
            return 0
        if not _sleep_until(deadline, args.interval.total_seconds()):
            _error(
                f"timed out after {core.span(args.timeout.total_seconds())}: the operator has "
                "not taken up the retry (status.lastRetry.token)"
            )
            return 2


# --------------------------------------------------------------------------- cancel


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_cancel(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cluster = Cluster(args.kubeconfig, args.context)
    namespace = args.namespace or cluster.namespace
    ok = True
    todo: list[str] = []
    for name in dict.fromkeys(args.names):
        try:
            obj = cluster.get_request(namespace, name)
        except ApiException as err:
            if err.status != 404:
                raise
            _error(f"{DSR_PLURAL}.{GROUP} {name!r} not found in namespace {namespace}")
            ok = False
            continue
        phase = (obj.get("status") or {}).get("phase")
        if phase in core.FINISHED:
            _note(f"{name} is already {phase}: skipped")
        else:
            todo.append(name)
    if not todo:
        return 0 if ok else 1
    if not args.yes:
        if not sys.stdin.isatty():
            raise PluginError("refusing to cancel without --yes: stdin is not a terminal")
        listed = ", ".join(todo)
        if not _confirm(
            f"Cancel {len(todo)} unfinished request(s) in namespace {namespace} ({listed})? "
            "They are deleted; Mixpanel deletions that have not started are cancelled."
        ):
            _error("not confirmed: nothing cancelled")
            return 1
    for name in todo:
        ok = _delete_unfinished(cluster, namespace, name) and ok
    return 0 if ok else 1


def _delete_unfinished(cluster: Cluster, namespace: str, name: str, tries: int = 3) -> bool:
    """Delete the request unless it finished meanwhile: the delete is conditional on the
    resourceVersion whose phase was checked, and checked again when that changed."""
    for _ in range(tries):
        try:
            obj = cluster.get_request(namespace, name)
        except ApiException as err:
            if err.status != 404:
                raise
            _note(f"{name} is already gone")
            return True
        phase = (obj.get("status") or {}).get("phase")
        if phase in core.FINISHED:
            _note(f"{name} is already {phase}: skipped")
            return True
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(
                resource_version=obj["metadata"]["resourceVersion"],
                uid=obj["metadata"]["uid"],
            )
        )
        try:
            cluster.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, DSR_PLURAL, name, body=options, _request_timeout=TIMEOUT
            )
        except ApiException as err:
            if err.status == 409:
                continue  # changed since it was read: look again
            if err.status == 404:
                _note(f"{name} is already gone")
                return True
            raise
        print(f"{DSR_KIND} {name!r} deleted (was {phase or 'not started'})")
        return True
    _error(f"{name} kept changing; not cancelled, try again")
    return False


# --------------------------------------------------------------------------- completion


def cmd_completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sys.stdout.write(core.completion_script(build_parser(), args.shell))
    return 0


# --------------------------------------------------------------------------- parser


def _connection_flags(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    """kubectl's connection flags, accepted before and after the subcommand."""
    default = argparse.SUPPRESS if sub else None
    parser.add_argument("--kubeconfig", default=default, metavar="PATH", help="kubeconfig file")
    parser.add_argument("--context", default=default, help="kubeconfig context to use")
    parser.add_argument(
        "-n", "--namespace", default=default, help="namespace (default: the context's)"
    )


def _time_arg(text: str) -> datetime:
    try:
        return core.parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl dsr",
        description="File, follow, retry and cancel Mixpanel data subject requests "
        "(DataSubjectRequest, mixpaneldsr.io).",
    )
    parser.add_argument("--version", action="version", version=__version__)
    _connection_flags(parser, sub=False)
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    new = subs.add_parser(
        "new",
        help="write a DataSubjectRequest: print it, or create it with --apply",
        description="Write a DataSubjectRequest manifest and print it (or create it with "
        "--apply). More than 1000 ids or 100,000 bytes of ids go into a Secret NAME-ids "
        "(key ids, one id per line) that the request refers to.",
    )
    new.add_argument("name", metavar="NAME")
    _connection_flags(new, sub=True)
    new.add_argument("--project", required=True, help="MixpanelProject (in the namespace)")
    new.add_argument(
        "--cluster-project", action="store_true", help="--project is a ClusterMixpanelProject"
    )
    new.add_argument("--type", required=True, choices=[t.value for t in RequestType])
    new.add_argument("--compliance", default="GDPR", choices=["GDPR", "CCPA"])
    new.add_argument(
        "--disclosure", choices=["Data", "Categories", "Sources"], help="CCPA retrievals only"
    )
    new.add_argument(
        "--received-at",
        type=_time_arg,
        metavar="TIME",
        help="when the data subject asked, e.g. 2026-11-28T09:00:00Z (default: on creation)",
    )
    source = new.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--id", dest="ids", action="extend", nargs="+", metavar="ID", help="distinct id(s)"
    )
    source.add_argument(
        "--ids-file", metavar="PATH", help="one id per line, or a JSON array (- for stdin)"
    )
    source.add_argument("--csv", metavar="PATH", help="a CSV file with a header row")
    new.add_argument("--csv-column", metavar="COLUMN", help="the CSV column holding the ids")
    new.add_argument("--requested-by", metavar="USER", help="spec.requestedBy (your user name)")
    new.add_argument("--apply", action="store_true", help="create the objects")
    new.add_argument(
        "--dry-run-server",
        action="store_true",
        help="send them to the API server for validation (admission included), store nothing",
    )
    new.add_argument("-o", "--output", choices=["yaml", "json"])
    new.set_defaults(func=cmd_new, command_parser=new)

    status = subs.add_parser(
        "status",
        help="a summary per project and phase, or one request in detail",
        description="Without NAME: requests at risk of missing their deadline, then counts "
        "per project and phase. With NAME: the request's progress, conditions and tasks.",
    )
    status.add_argument("name", nargs="?", metavar="NAME")
    _connection_flags(status, sub=True)
    status.add_argument("-A", "--all-namespaces", action="store_true")
    status.add_argument("-o", "--output", choices=["wide", "json", "yaml"])
    status.add_argument(
        "--operator-namespace",
        default=os.environ.get("DSR_OPERATOR_NAMESPACE", DEFAULT_OPERATOR_NAMESPACE),
        help="where a ClusterMixpanelProject's MixpanelTasks are (default %(default)s)",
    )
    status.set_defaults(func=cmd_status, command_parser=status)

    wait = subs.add_parser(
        "wait",
        help="block until requests finish (exit 0 all Succeeded, 1 some not, 2 timeout)",
        description="Wait until the named requests (or every request in the namespace when "
        "it started) are Succeeded, Failed or Cancelled. Exit 0 when all Succeeded, 1 when "
        "any Failed, was Cancelled or deleted, 2 on timeout.",
    )
    wait.add_argument("names", nargs="*", metavar="NAME")
    _connection_flags(wait, sub=True)
    wait.add_argument("-A", "--all-namespaces", action="store_true")
    wait.add_argument(
        "--timeout", type=core.duration_arg, default=core.parse_duration("30m"),
        help="give up after this long: 90s, 30m, 2h, 1d (default 30m)",
    )  # fmt: skip
    wait.add_argument("--interval", type=core.duration_arg, default=timedelta(seconds=2))
    wait.set_defaults(func=cmd_wait, command_parser=wait)

    retry = subs.add_parser(
        "retry",
        help="send a Failed request's failed ids again",
        description=f"Set the annotation {core.RETRY_ANNOTATION} to the current time; the "
        "operator sends the failed ids of a Failed request again for each new value.",
    )
    retry.add_argument("name", metavar="NAME")
    _connection_flags(retry, sub=True)
    retry.add_argument("--wait", action="store_true", help="wait until the operator took it up")
    retry.add_argument("--timeout", type=core.duration_arg, default=core.parse_duration("5m"))
    retry.add_argument("--interval", type=core.duration_arg, default=timedelta(seconds=2))
    retry.set_defaults(func=cmd_retry, command_parser=retry)

    cancel = subs.add_parser(
        "cancel",
        help="delete unfinished requests (asks first)",
        description="Delete requests that are not finished; the operator cancels their "
        "Mixpanel deletions that have not started. Finished requests are skipped.",
    )
    cancel.add_argument("names", nargs="+", metavar="NAME")
    _connection_flags(cancel, sub=True)
    cancel.add_argument("-y", "--yes", action="store_true", help="do not ask")
    cancel.set_defaults(func=cmd_cancel, command_parser=cancel)

    intake_command.add_parser(subs, _connection_flags)
    receipts_command.add_parser(subs, _connection_flags)

    completion = subs.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(func=cmd_completion, command_parser=completion)
    return parser


Command = Callable[[argparse.Namespace, argparse.ArgumentParser], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    try:
        return func(args, args.command_parser)
    except PluginError as err:
        _error(str(err))
    except ApiException as err:
        _error(api_message(err))
    except TransportError as err:
        _error(f"cannot reach the API server: {err}")
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 1

"""``kubectl dsr intake FILE.csv``: a CSV export of requests into DataSubjectRequests whose ids
are in Secrets; printed, written to a directory for Git (plain, SealedSecrets or SOPS), or
created in the cluster (Secrets first, then requests). The pure parts are
:mod:`.intake` (reading the file) and :mod:`.intake_output` (what is written)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mixpanel_dsr.api import GROUP, VERSION
from mixpanel_dsr.mixpanel.types import ComplianceType
from mixpanel_dsr.plugin import intake, intake_output
from mixpanel_dsr.plugin.cluster import (
    DSR_KIND,
    DSR_PLURAL,
    TIMEOUT,
    Cluster,
    api_message,
    as_object,
)
from mixpanel_dsr.plugin.core import MANAGED_BY, PluginError
from mixpanel_dsr.plugin.intake import SecretLayout
from mixpanel_dsr.plugin.intake_output import SecretFormat


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _read_csv(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PluginError(f"{path} is not UTF-8 text: export the CSV as UTF-8") from None
    except OSError as err:
        raise PluginError(f"cannot read {path}: {err.strerror}") from None


def _options(args: argparse.Namespace, namespace: str | None) -> intake.Options:
    batch = args.batch or intake.batch_name("intake" if args.file == "-" else Path(args.file).stem)
    return intake.Options(
        project=args.project,
        cluster_project=args.cluster_project,
        namespace=namespace,
        compliance=ComplianceType(args.compliance),
        separator=args.id_separator,
        max_ids=args.max_ids,
        batch=batch,
        layout=SecretLayout(args.secrets),
    )


def cmd_intake(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    fmt = args.output or "yaml"
    secret_format = SecretFormat(args.secret_format or "plain")
    to_files = args.dir is not None
    offline = args.dry_run or args.output is not None or to_files
    if args.dry_run and (args.output or to_files or args.secret_format):
        parser.error("--dry-run prints the plan only: no -o, --dir or --secret-format with it")
    if args.secret_format and not to_files:
        parser.error("--secret-format writes separate files: give --dir DIR")
    if args.sops_age and secret_format is not SecretFormat.SOPS:
        parser.error("--sops-age goes with --secret-format sops")
    if args.batch and args.batch != intake.batch_name(args.batch):
        parser.error(f"--batch {args.batch!r}: lower-case letters, digits and '-', at most 63")
    if args.max_ids < 1:
        parser.error("--max-ids must be at least 1")

    if secret_format is SecretFormat.SEALED_SECRETS and not args.namespace:
        raise PluginError("a SealedSecret is sealed for one namespace: give -n NAMESPACE")
    # The whole file is checked before the cluster is asked anything.
    plan = intake.read_plan(_read_csv(args.file), _options(args, None), datetime.now(UTC))
    for note in intake.notes(plan):
        _note(note)
    if plan.errors:
        refused = plan.refusal
        if not args.skip_invalid:
            raise intake.IntakeError(
                plan.errors,
                f"{args.file}: {refused}; nothing was written or created "
                "(--skip-invalid leaves them out):",
            )
        for error in plan.errors:
            _note(f"warning: {error}")
        _note(f"warning: {refused}: left out (--skip-invalid)")
    if not plan.requests:
        raise PluginError("no request to make: the file holds no good ticket")
    cluster = None if offline else Cluster(args.kubeconfig, args.context)
    namespace = args.namespace or (cluster.namespace if cluster else None)
    options = _options(args, namespace)
    manifests = intake_output.build_manifests(plan, options)

    if args.dry_run:
        sys.stdout.write(intake_output.summary(plan, manifests, options, datetime.now(UTC)))
        return 0
    if to_files:
        return _write_dir(Path(args.dir), manifests, fmt, secret_format, args.sops_age)
    if args.output:
        sys.stdout.write(
            intake_output.render_stream([*manifests.secrets, *manifests.requests], fmt)
        )
        return 0
    assert cluster is not None
    assert namespace is not None
    return _apply(cluster, namespace, manifests, skip_existing=args.skip_existing)


def _write_dir(
    directory: Path,
    manifests: intake_output.Manifests,
    fmt: str,
    secret_format: SecretFormat,
    age: str | None,
) -> int:
    """Write the files; refuse to overwrite any (a second run must not mix with the first)."""
    written = intake_output.files(manifests, fmt, secret_format)
    clashes = sorted(
        p for p in written if (directory / p).exists() and not p.endswith(".gitignore")
    )
    if clashes:
        shown = ", ".join(clashes[:5]) + (" ..." if len(clashes) > 5 else "")
        raise PluginError(
            f"{len(clashes)} files exist already in {directory} ({shown}): nothing written"
        )
    for relative, text in written.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = relative.startswith(intake_output.secret_dir(secret_format) + "/")
        # Secrets with ids are readable by their owner only.
        mode = 0o600 if secret and not relative.endswith(".gitignore") else 0o644
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    secret_dir = intake_output.secret_dir(secret_format)
    _note(
        f"wrote {len(manifests.requests)} requests to {directory / intake_output.REQUESTS_DIR} and "
        f"{intake.plural(len(manifests.secrets), 'secret')} to {directory / secret_dir}"
    )
    sys.stdout.write(
        intake_output.next_steps(str(directory), fmt, secret_format, len(manifests.secrets), age)
    )
    return 0


# --------------------------------------------------------------------------- apply


def _owner(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": request["apiVersion"],
        "kind": request["kind"],
        "name": request["metadata"]["name"],
        "uid": request["metadata"]["uid"],
    }


class _Applier:
    """Creates Secrets and requests in one namespace, remembering what it made."""

    def __init__(self, cluster: Cluster, namespace: str, *, skip_existing: bool) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.skip_existing = skip_existing
        self.requests_made = 0
        self.secrets_made = 0

    def put_secret(self, secret: dict[str, Any], keys: set[str]) -> bool:
        """Create the Secret; with --skip-existing, one this plugin made before gets the
        ``keys`` of the requests about to be made, and no other (the ids of a request that
        exists already never change). True when this call created it."""
        name = secret["metadata"]["name"]
        body = client.V1Secret.from_dict(secret)
        assert body is not None
        try:
            self.cluster.core.create_namespaced_secret(
                self.namespace, body, _request_timeout=TIMEOUT
            )
        except ApiException as err:
            if err.status != 409 or not self.skip_existing:
                raise
            found = self.metadata(name)
            if (found.get("labels") or {}).get("app.kubernetes.io/managed-by") != MANAGED_BY:
                raise PluginError(
                    f"secret/{name} exists and was not made by kubectl dsr: not touched"
                ) from None
            self.cluster.core.patch_namespaced_secret(
                name,
                self.namespace,
                {"data": {k: v for k, v in secret["data"].items() if k in keys}},
                _request_timeout=TIMEOUT,
                _content_type="application/merge-patch+json",
            )
            print(f"secret/{name} updated")
            return False
        self.secrets_made += 1
        print(f"secret/{name} created")
        return True

    def metadata(self, secret: str) -> dict[str, Any]:
        found = self.cluster.core.read_namespaced_secret(
            secret, self.namespace, _request_timeout=TIMEOUT
        )
        meta: dict[str, Any] = self.cluster.api.sanitize_for_serialization(found)["metadata"]
        return meta

    def delete_secret(self, name: str) -> None:
        with contextlib.suppress(ApiException):  # the refusal that led here matters more
            self.cluster.core.delete_namespaced_secret(
                name, self.namespace, _request_timeout=TIMEOUT
            )

    def create_request(self, manifest: dict[str, Any]) -> dict[str, Any]:
        made = as_object(
            self.cluster.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, DSR_PLURAL, manifest, _request_timeout=TIMEOUT
            )
        )
        self.requests_made += 1
        print(f"{DSR_KIND}/{made['metadata']['name']} created")
        return made

    def own(self, secret: str, owners: Sequence[dict[str, Any]], *, fresh: bool) -> None:
        """Make the Secret owned by the requests that read it, so that it goes once they all
        went (``ttlSecondsAfterFinished``, or by hand). ``fresh``: this run created it, it has
        no owners yet; else the owners it has are kept."""
        try:
            patch: dict[str, Any] = {"ownerReferences": list(owners)}
            if not fresh:
                current = self.metadata(secret)
                kept: list[dict[str, Any]] = current.get("ownerReferences") or []
                uids = {o["uid"] for o in kept}
                patch = {
                    "ownerReferences": kept + [o for o in owners if o["uid"] not in uids],
                    "resourceVersion": current["resourceVersion"],
                }
            self.cluster.core.patch_namespaced_secret(
                secret,
                self.namespace,
                {"metadata": patch},
                _request_timeout=TIMEOUT,
                _content_type="application/merge-patch+json",
            )
        except ApiException as err:
            _note(
                f"warning: secret/{secret} is not owned by its requests ({api_message(err)}): "
                "delete it yourself once they are gone"
            )


def _apply(
    cluster: Cluster, namespace: str, manifests: intake_output.Manifests, *, skip_existing: bool
) -> int:
    """A Secret that several requests read first, then per request its own Secret (if any),
    the request, and the Secret's ownership. A request the API server refuses takes its new
    Secret with it; requests already made stay (the message says how to finish)."""
    existing = {o["metadata"]["name"] for o in cluster.list_requests(namespace)}
    names = [r["metadata"]["name"] for r in manifests.requests]
    there = [n for n in names if n in existing]
    if there and not skip_existing:
        shown = ", ".join(there[:10]) + (" ..." if len(there) > 10 else "")
        raise PluginError(
            f"{len(there)} of these requests exist already in namespace {namespace} ({shown}): "
            "nothing created (--skip-existing leaves them out)"
        )
    if there:
        _note(f"{len(there)} requests exist already: left out (--skip-existing)")
    wanted = [r for r in manifests.requests if r["metadata"]["name"] not in existing]
    if not wanted:
        _note("nothing to create")
        return 0
    readers = Counter(manifests.secret_of[n] for n in names)
    keys: dict[str, set[str]] = {}
    for manifest in wanted:
        ref = manifest["spec"]["distinctIdsFrom"]["secretKeyRef"]
        keys.setdefault(ref["name"], set()).add(ref["key"])
    shared = [s for s, n in readers.items() if n > 1 and s in keys]
    secrets = {s["metadata"]["name"]: s for s in manifests.secrets}
    applier = _Applier(cluster, namespace, skip_existing=skip_existing)
    owners: dict[str, list[dict[str, Any]]] = {s: [] for s in shared}
    current = ""
    try:
        for secret in shared:
            current = f"secret/{secret}"
            applier.put_secret(secrets[secret], keys[secret])
        for manifest in wanted:
            current = f"{DSR_KIND}/{manifest['metadata']['name']}"
            secret = manifests.secret_of[manifest["metadata"]["name"]]
            made_secret = secret not in owners and applier.put_secret(secrets[secret], keys[secret])
            try:
                made = applier.create_request(manifest)
            except ApiException:
                if made_secret:
                    applier.delete_secret(secret)
                raise
            if secret in owners:
                owners[secret].append(_owner(made))
            else:
                applier.own(secret, [_owner(made)], fresh=made_secret)
    except (ApiException, PluginError) as err:
        why = api_message(err) if isinstance(err, ApiException) else str(err)
        for secret, refs in owners.items():
            if refs:
                applier.own(secret, refs, fresh=False)
        raise PluginError(
            f"{current}: {why}\ncreated {applier.requests_made} of {len(wanted)} requests; "
            "fix the cause and run the same command with --skip-existing to create the rest"
        ) from None
    for secret, refs in owners.items():
        applier.own(secret, refs, fresh=False)
    _note(
        f"created {intake.plural(applier.requests_made, 'request')} and "
        f"{intake.plural(applier.secrets_made, 'secret')} in namespace {namespace}"
    )
    return 0


# --------------------------------------------------------------------------- parser


def add_parser(subs: Any, connection_flags: Any) -> None:
    """Register ``intake`` on the plugin's subcommands."""
    cmd: argparse.ArgumentParser = subs.add_parser(
        "intake",
        help="requests from a CSV export, ids in Secrets: plan, write for Git, or create",
        description="Turn a CSV export of data subject requests (ticket, type, compliance "
        "type, distinct ids, received date) into one DataSubjectRequest per ticket, its ids "
        "in a Secret (never in the request). --dry-run shows the plan; -o/--dir write "
        "manifests; otherwise they are created: Secrets first, then requests. No id is ever "
        "printed; a bad row stops everything unless --skip-invalid.",
    )
    cmd.add_argument("file", metavar="FILE.csv", help="the CSV export (- for stdin)")
    connection_flags(cmd, sub=True)
    cmd.add_argument("--project", help="MixpanelProject for rows without a project column")
    cmd.add_argument(
        "--cluster-project", action="store_true", help="projects are ClusterMixpanelProjects"
    )
    cmd.add_argument(
        "--compliance", default="GDPR", choices=[c.value for c in ComplianceType],
        help="for rows with no compliance type (default %(default)s)",
    )  # fmt: skip
    cmd.add_argument(
        "--secrets", default=SecretLayout.PER_REQUEST.value,
        choices=[s.value for s in SecretLayout],
        help="a Secret NAME-ids per request (default), or one Secret BATCH-ids for the file "
        "with a key per request",
    )  # fmt: skip
    cmd.add_argument(
        "--batch", metavar="NAME",
        help="names this run: label mixpaneldsr.io/intake and the per-batch Secret "
        "(default: from the file name)",
    )  # fmt: skip
    cmd.add_argument(
        "--id-separator", default=";", metavar="CHAR",
        help="separates several ids in one cell (default %(default)r)",
    )  # fmt: skip
    cmd.add_argument(
        "--max-ids", type=int, default=intake.DEFAULT_MAX_IDS, metavar="N",
        help="refuse a ticket with more distinct ids than this (default %(default)s)",
    )  # fmt: skip
    cmd.add_argument(
        "--dry-run", action="store_true", help="print what would be created (names and counts)"
    )
    cmd.add_argument("-o", "--output", choices=["yaml", "json"], help="print or write manifests")
    cmd.add_argument("--dir", metavar="DIR", help="write one file per object under DIR")
    cmd.add_argument(
        "--secret-format", choices=[f.value for f in SecretFormat],
        help="Secret files for Git: plain (git-ignored), sealedsecrets (for kubeseal) or sops",
    )  # fmt: skip
    cmd.add_argument("--sops-age", metavar="RECIPIENT", help="age recipient for the .sops.yaml")
    cmd.add_argument(
        "--skip-invalid", action="store_true",
        help="leave bad tickets out (warnings) instead of refusing the whole file",
    )  # fmt: skip
    cmd.add_argument(
        "--skip-existing", action="store_true",
        help="leave out requests that exist already (to finish an interrupted run)",
    )  # fmt: skip
    cmd.set_defaults(func=cmd_intake, command_parser=cmd)

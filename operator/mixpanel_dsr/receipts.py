"""Receipts: the immutable record of a finished request, for auditors (pure).

A receipt holds no distinct id, link or token. Each id appears only as a keyed digest: the
first 8 bytes of HMAC-SHA256 under the installation's key, so that whoever holds the key can
answer "was this id erased, when, by which task?" and nobody else can confirm a guess. The
whole receipt is sealed with the same key: one written by anybody else, or altered, does not
verify. 8 bytes keep a 100,000-id receipt under etcd's object limit; two different ids share
a digest with odds of about one in 10^19 per pair.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mixpanel_dsr.api.models import (
    MAX_RECEIPT_ITEMS,
    NEVER_COPIED,
    DataSubjectRequestSpec,
    DataSubjectRequestStatus,
    MixpanelTaskStatus,
    Phase,
    ReceiptPolicy,
    ReceiptProject,
    ReceiptSpec,
    ReceiptTask,
    RequestIdentity,
    TaskPhase,
)
from mixpanel_dsr.mixpanel.types import MAX_IDS_PER_REQUEST

DIGEST_BYTES = 8
SEAL_PREFIX = "hmac-sha256:"
#: Longest object name Kubernetes accepts.
MAX_NAME = 253


def id_digest(key: bytes, distinct_id: str) -> bytes:
    """The keyed digest of one id as receipts store it."""
    return hmac.new(key, distinct_id.encode(), hashlib.sha256).digest()[:DIGEST_BYTES]


def pack_digests(key: bytes, ids: Iterable[str]) -> str:
    """Digests of ``ids``, sorted (no order to learn from), as one base64 string."""
    return base64.b64encode(b"".join(sorted({id_digest(key, i) for i in ids}))).decode()


def unpack_digests(text: str) -> set[bytes]:
    raw = base64.b64decode(text or "")
    return {raw[i : i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES)}


def receipt_name(request_name: str, uid: str, retry: str | None, part: int) -> str:
    """Stable per (request, retry, part): a second write of the same receipt is refused
    as existing rather than stored twice; a request made again under the same name (a new
    uid) gets receipts of its own."""
    suffix = f"-{uid.replace('-', '')[:8]}"
    if retry:
        suffix += "-r" + hashlib.sha256(retry.encode()).hexdigest()[:6]
    if part > 1:
        suffix += f"-p{part}"
    return request_name[: MAX_NAME - len(suffix)].rstrip("-.") + suffix


def _canonical(spec: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in spec.items() if k != "seal"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal_of(key: bytes, spec: Mapping[str, Any]) -> str:
    """The seal of a receipt's spec as stored (its JSON form, without ``seal``)."""
    return SEAL_PREFIX + hmac.new(key, _canonical(spec), hashlib.sha256).hexdigest()


def verify(key: bytes, spec: Mapping[str, Any]) -> bool:
    """True when the stored spec was sealed with ``key`` and not changed since."""
    seal = spec.get("seal")
    return isinstance(seal, str) and hmac.compare_digest(seal, seal_of(key, spec))


def copied(source: Mapping[str, str], wanted: Sequence[str]) -> dict[str, str] | None:
    """The entries of ``source`` whose key is in ``wanted`` or under a prefix ending in '/'."""
    out = {
        k: v
        for k, v in source.items()
        if k not in NEVER_COPIED
        and any(k == w or (w.endswith("/") and k.startswith(w)) for w in wanted)
    }
    return out or None


@dataclass(frozen=True)
class Finish:
    """Everything a receipt is made of, gathered by the engine when a request finished."""

    request: RequestIdentity
    project: ReceiptProject
    spec: DataSubjectRequestSpec
    status: DataSubjectRequestStatus
    ids: Sequence[str]
    #: MixpanelTask name -> its status, for the tasks the request's status names.
    tasks: Mapping[str, MixpanelTaskStatus]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    policy: ReceiptPolicy | None
    received_at: datetime
    deadline: datetime
    issued_at: datetime
    retention: timedelta


def build(key: bytes, finish: Finish) -> list[ReceiptSpec]:
    """The receipt's parts, each sealed: one part unless the request holds more ids than one
    object can carry digests of (``MAX_RECEIPT_ITEMS`` task slices of up to 2,000 ids)."""
    status, ids = finish.status, finish.ids
    items: list[ReceiptTask | str] = []
    covered = [False] * len(ids)
    for ref in status.tasks or []:
        live = finish.tasks.get(ref.name)
        held = ids[ref.start : ref.end]
        for i in range(ref.start, min(ref.end, len(ids))):
            covered[i] = True
        items.append(
            ReceiptTask(
                name=ref.name,
                tracking_id=(live.tracking_id if live else None) or ref.tracking_id,
                phase=(live.phase if live and live.phase else ref.phase),
                mixpanel_state=live.mixpanel_state if live else None,
                submitted_at=(live.submitted_at if live else None) or ref.submitted_at,
                completed_at=live.completion_time if live else None,
                id_count=len(held),
                id_digests=pack_digests(key, held),
            )
        )
    unsent = [i for i, c in zip(ids, covered, strict=True) if not c]
    for start in range(0, len(unsent), MAX_IDS_PER_REQUEST):
        items.append(pack_digests(key, unsent[start : start + MAX_IDS_PER_REQUEST]))
    chunks = [items[i : i + MAX_RECEIPT_ITEMS] for i in range(0, len(items), MAX_RECEIPT_ITEMS)]
    chunks = chunks or [[]]
    completed = status.completion_time or finish.issued_at
    outcome = status.phase or Phase.FAILED
    ready = next((c for c in status.conditions or [] if c.type == "Ready"), None)
    approval = status.approval
    policy = finish.policy or ReceiptPolicy()
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        spec = ReceiptSpec(
            request=finish.request,
            part=number,
            parts=len(chunks),
            project=finish.project,
            type=finish.spec.type,
            compliance_type=finish.spec.compliance_type,
            disclosure_type=finish.spec.disclosure_type,
            labels=copied(finish.labels, policy.copy_labels),
            annotations=copied(finish.annotations, policy.copy_annotations),
            requested_by=approval.requested_by if approval else finish.spec.requested_by,
            approved_by=approval.approved_by if approval else finish.spec.approved_by,
            approved_at=approval.approved_at if approval else None,
            received_at=finish.received_at,
            deadline=finish.deadline,
            completed_at=completed,
            deadline_met=outcome is Phase.SUCCEEDED and completed <= finish.deadline,
            outcome=outcome,
            reason=ready.reason if ready else None,
            message=ready.message if ready else None,
            retry=status.last_retry.token if status.last_retry else None,
            id_count=len(ids),
            ids_done=status.ids_done or 0,
            ids_digest=status.ids_digest,
            tasks=[c for c in chunk if isinstance(c, ReceiptTask)],
            unsent_id_digests=[c for c in chunk if isinstance(c, str)],
            issued_at=finish.issued_at,
            retain_until=completed + finish.retention,
            seal="",
        )
        wire = spec.to_wire()
        parts.append(spec.model_copy(update={"seal": seal_of(key, wire)}))
    return parts


# ---------------------------------------------------------------------- reading receipts


@dataclass(frozen=True)
class Finding:
    """What one receipt says about one id."""

    receipt: str
    namespace: str
    request: str
    outcome: str
    #: The task whose word on the id is final (the last that held it), if any.
    task: str | None
    tracking_id: str | None
    task_phase: str | None
    completed_at: str | None
    #: True when that task reached SUCCESS: the id was erased (or exported).
    done: bool


def find_id(key: bytes, receipts: Iterable[Mapping[str, Any]], distinct_id: str) -> list[Finding]:
    """Every receipt that holds ``distinct_id`` (objects as the API server returns them)."""
    digest = id_digest(key, distinct_id)
    found = []
    for obj in receipts:
        spec = obj.get("spec") or {}
        meta = obj.get("metadata") or {}
        last: Mapping[str, Any] | None = None
        for task in spec.get("tasks") or []:
            if digest in unpack_digests(task.get("idDigests", "")):
                last = task
        unsent = any(digest in unpack_digests(t) for t in spec.get("unsentIdDigests") or [])
        if last is None and not unsent:
            continue
        request = spec.get("request") or {}
        found.append(
            Finding(
                receipt=str(meta.get("name")),
                namespace=str(meta.get("namespace")),
                request=str(request.get("name")),
                outcome=str(spec.get("outcome")),
                task=last.get("name") if last else None,
                tracking_id=last.get("trackingId") if last else None,
                task_phase=last.get("phase") if last else None,
                completed_at=last.get("completedAt") if last else None,
                done=bool(last and last.get("phase") == TaskPhase.SUCCEEDED.value),
            )
        )
    return found

"""Pydantic models of the three custom resources, with the admission rules they carry.

Field descriptions and CEL rules here become the CRD's OpenAPI schema (see
:mod:`mixpanel_dsr.api.crd`), so what the operator parses and what the API
server admits cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mixpanel_dsr.mixpanel.types import (
    MAX_IDS_PER_REQUEST,
    ComplianceType,
    DisclosureType,
    Region,
    TaskState,
)

#: Most ids a request may list inline, and most bytes (UTF-8) they may take in all; longer
#: lists belong in a Secret (distinctIdsFrom). Measured on kube-apiserver 1.36: client-side
#: `kubectl apply` stores the manifest in a 256 KiB annotation (1,015 ids of 255 characters
#: fit), server-side apply stores every id twice (spec and managedFields) under etcd's
#: 1.5 MiB (2,994 ids of 255 characters). 200,000 bytes leaves ~46 KB of annotation room.
MAX_INLINE_IDS = 5000
MAX_INLINE_ID_BYTES = 200_000
#: The schema's own maxItems: only an outer bound, so that the CEL rules below (whose
#: messages point to a Secret) run for anything near the cap.
MAX_INLINE_IDS_SCHEMA = 50_000
INLINE_CAP_HINT = (
    "put longer lists in a Secret and refer to it with spec.distinctIdsFrom.secretKeyRef instead"
)
#: Longest distinct id accepted (Mixpanel documents none; this keeps objects and CEL costs bounded).
MAX_ID_LENGTH = 255
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_DATA_KEY = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a pattern, not a secret
GO_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"


def cel(
    rule: str, message: str, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str], **extra: Any) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules (and any other x-kubernetes-* keys)."""
    return {"x-kubernetes-validations": list(rules), **extra} if rules else dict(extra)


def immutable(field: str, *, optional: bool) -> dict[str, str]:
    """A transition rule that refuses any change of ``field`` once the object exists.

    For an optional field ``self.f == oldSelf.f`` alone would not run when the
    field is added or removed, so presence is compared too.
    """
    if optional:
        rule = (
            f"has(self.{field}) == has(oldSelf.{field}) && "
            f"(!has(self.{field}) || self.{field} == oldSelf.{field})"
        )
    else:
        rule = f"self.{field} == oldSelf.{field}"
    return cel(
        rule,
        f"spec.{field} is immutable: create a new request instead",
        f".{field}",
        "FieldValueForbidden",
    )


class Model(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready form with camelCase keys and unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- shared pieces


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """One observation of the object's state, in the metav1.Condition shape."""

    type: str = Field(
        description="Type of condition in CamelCase, e.g. Ready, Reconciling, Stalled.",
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the object when this condition was set.",
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed from one status to another."
    )
    reason: str = Field(
        description="Programmatic CamelCase identifier of why the condition is as it is.",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable details; never holds a token, an export link or a distinct id.",
    )


ConditionList = Annotated[
    list[Condition],
    Field(
        description="Current conditions of the object (Ready, Reconciling, Stalled and domain "
        "ones).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class SecretKeySelector(Model):
    """A key of a Secret in the same namespace as the referring object."""

    name: str = Field(
        description="Name of the Secret.", min_length=1, max_length=253, pattern=DNS_SUBDOMAIN
    )
    key: str = Field(
        description="Key within the Secret's data.",
        min_length=1,
        max_length=253,
        pattern=SECRET_DATA_KEY,
    )


# --------------------------------------------------------------------------- projects


class CredentialsSecretRef(SecretKeySelector):
    """The Secret key that holds the project's GDPR OAuth token.

    For a MixpanelProject the Secret is in the project's namespace; for a
    ClusterMixpanelProject it is in the operator's namespace.
    """

    key: str = Field(
        default="token",
        description="Key within the Secret's data that holds the OAuth token (default token).",
        min_length=1,
        max_length=253,
        pattern=SECRET_DATA_KEY,
    )


class MixpanelProjectSpec(Model):
    """A Mixpanel project and the credentials to make GDPR/CCPA requests against it."""

    token: str = Field(
        description="The project token (public: it ships in client SDKs) that identifies the "
        "project to Mixpanel's GDPR API.",
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    region: Region = Field(
        default=Region.US,
        description="Data residency region of the project (US, EU or IN); calls go to that "
        "region's host.",
    )
    credentials_secret_ref: CredentialsSecretRef = Field(
        description="Secret key holding the GDPR OAuth token of a project owner or admin.",
    )
    token_expires_at: datetime | None = Field(
        default=None,
        description="When the OAuth token expires (Mixpanel tokens last one year); drives the "
        "TokenExpiring condition and metric.",
    )
    request_interval: str = Field(
        default="1100ms",
        pattern=GO_DURATION,
        max_length=32,
        description="Least time between two calls for this project token (creates, status "
        "checks and cancels share it); Mixpanel allows 1 request/s. A Go duration.",
        json_schema_extra=validations(
            cel(
                # The pattern refuses what is no duration; don't let CEL fail on it too.
                f"!self.matches(r'{GO_DURATION}') || "
                "(duration(self) >= duration('100ms') && duration(self) <= duration('1h'))",
                "spec.requestInterval must be between 100ms and 1h",
            )
        ),
    )
    max_ids_per_request: int = Field(
        default=MAX_IDS_PER_REQUEST,
        ge=1,
        le=MAX_IDS_PER_REQUEST,
        description="Most distinct ids in one Mixpanel task (Mixpanel's limit is 2000; lower "
        "for projects with Group Analytics).",
    )
    max_outstanding_retrievals: int = Field(
        default=1,
        ge=1,
        le=100,
        description="How many retrieval tasks may be outstanding at once; more are queued "
        "(Mixpanel limits outstanding retrieval scans per project).",
    )
    approval: ApprovalPolicy | None = Field(
        default=None,
        description="Four-eyes approval: a request of the listed types waits (phase "
        "AwaitingApproval) until someone other than spec.requestedBy sets spec.approvedBy. "
        "The admission policy shipped in crds/ checks who sets them and that the approver "
        "may approve (RBAC verb approve on datasubjectrequests).",
    )
    status_callbacks: bool | None = Field(
        default=None,
        description="Mixpanel sends this project's status callbacks (switched on for the "
        "project at Mixpanel): each task is created with a subject_request_id and the "
        "operator's callback URL (--callback-url); a callback saying a task moved has it "
        "checked at once, and otherwise tasks are checked every --callback-poll-interval. "
        "Status checks stay the truth.",
    )
    notifications: list[WebhookEndpoint] | None = Field(
        default=None,
        max_length=5,
        description="Webhook endpoints told (signed CloudEvents) when this project's requests "
        "succeed, fail, near or pass their deadline, have an export ready or await approval. "
        "Payloads carry ticket labels (spec.receipts.copyLabels) and the receipt's name, never "
        "ids, links or tokens.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    receipts: ReceiptPolicy | None = Field(
        default=None,
        description="What the receipt of each finished request copies from the request (ticket "
        "labels and annotations); receipts are written whatever this says.",
    )
    api_base_url: str | None = Field(
        default=None,
        alias="apiBaseURL",
        max_length=2048,
        description="Override of the GDPR API base URL (a sandbox or a proxy), e.g. "
        "http://127.0.0.1:8131/api/app. Empty: the region's Mixpanel host.",
        json_schema_extra=validations(
            cel(
                "isURL(self) && url(self).getScheme() in ['http', 'https']",
                "spec.apiBaseURL must be an absolute http or https URL",
            )
        ),
    )


class RequestType(StrEnum):
    DELETION = "Deletion"
    RETRIEVAL = "Retrieval"


class ApprovalPolicy(Model):
    """Four-eyes approval: requests of these types wait until another person approves them."""

    required_for: list[RequestType] = Field(
        default_factory=lambda: [RequestType.DELETION],
        min_length=1,
        max_length=2,
        description="The request types that need a second person's approval before anything "
        "is sent to Mixpanel (default Deletion).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class NotificationEvent(StrEnum):
    """What a webhook endpoint can be told about a request."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DEADLINE_NEAR = "DeadlineNear"
    DEADLINE_PASSED = "DeadlinePassed"
    EXPORT_READY = "ExportReady"
    AWAITING_APPROVAL = "AwaitingApproval"


class WebhookEndpoint(Model):
    """A webhook endpoint: where, signed with what, told about what."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Names the endpoint in status, Events and metrics.",
    )
    url: str = Field(
        max_length=2048,
        description="Where to POST (https; http only where the operator's installer allowed "
        "it with --allowed-webhook-url).",
        json_schema_extra=validations(
            cel(
                "isURL(self) && url(self).getScheme() in ['http', 'https']",
                "url must be an absolute http or https URL",
            )
        ),
    )
    signing_secret_ref: SecretKeySelector = Field(
        description="Secret key (in the project's namespace; the operator's for a "
        "ClusterMixpanelProject) holding the HMAC-SHA256 signing secret."
    )
    events: list[NotificationEvent] = Field(
        default_factory=lambda: list(NotificationEvent),
        min_length=1,
        max_length=len(NotificationEvent),
        description="Which events to send (default all).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


#: Annotations never copied into a receipt: kubectl's copy of the manifest holds inline ids.
NEVER_COPIED = ("kubectl.kubernetes.io/last-applied-configuration",)
LABEL_KEY_OR_PREFIX = (
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
)


class ReceiptPolicy(Model):
    """Which of a request's labels and annotations its receipt keeps (e.g. the ticket id)."""

    copy_labels: list[Annotated[str, Field(max_length=317, pattern=LABEL_KEY_OR_PREFIX)]] = Field(
        default_factory=list,
        max_length=32,
        description="Label keys to copy; a key ending in '/' copies every label under that "
        "prefix (e.g. privacy.example.com/).",
    )
    copy_annotations: list[Annotated[str, Field(max_length=317, pattern=LABEL_KEY_OR_PREFIX)]] = (
        Field(
            default_factory=list,
            max_length=32,
            description="Annotation keys to copy, as copyLabels. kubectl's last-applied-"
            "configuration is never copied (it can hold inline ids).",
        )
    )


class MixpanelProjectStatus(Model):
    """Observed state of a project's credentials and work."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation last reconciled."
    )
    conditions: ConditionList | None = None
    token_expires_at: datetime | None = Field(
        default=None,
        description="When the OAuth token expires, from spec.tokenExpiresAt or observed.",
    )
    last_verified_time: datetime | None = Field(
        default=None, description="When Mixpanel last accepted the OAuth token."
    )
    queued_ids: int | None = Field(
        default=None, ge=0, description="Distinct ids waiting to be submitted for this project."
    )
    outstanding_tasks: int | None = Field(
        default=None, ge=0, description="Mixpanel tasks submitted and not yet finished."
    )
    outstanding_retrievals: int | None = Field(
        default=None, ge=0, description="Retrieval tasks submitted and not yet finished."
    )
    notifications_pending: int | None = Field(
        default=None, ge=0, description="Webhook notifications waiting to be delivered."
    )


class MixpanelProject(Model):
    """A namespaced Mixpanel project (short name mpp)."""

    spec: MixpanelProjectSpec
    status: MixpanelProjectStatus | None = None


class LabelSelectorRequirement(Model):
    """One requirement on a label (metav1.LabelSelectorRequirement)."""

    key: str = Field(description="The label key.", min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[Annotated[str, Field(max_length=63)]] | None = Field(
        default=None,
        max_length=256,
        description="For In and NotIn: the values (non-empty); empty for Exists and DoesNotExist.",
    )


class LabelSelector(Model):
    """Selects objects by their labels (metav1.LabelSelector); {} selects everything."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.matchExpressions) || self.matchExpressions.all(e, "
                "(e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",
                "matchExpressions: In and NotIn need values; Exists and DoesNotExist take none",
            )
        )
    )

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, description="Labels that must all have these values."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=64, description="Requirements that must all hold."
    )


class ClusterMixpanelProjectSpec(MixpanelProjectSpec):
    """A Mixpanel project every selected namespace may send requests to."""

    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="The namespaces whose requests this project serves, by their labels. "
        "Absent: none (a cluster project is opt-in per namespace); {} selects every namespace.",
    )


class ClusterMixpanelProject(Model):
    """A cluster-scoped Mixpanel project (short name cmpp); its Secret lives in the
    operator's namespace."""

    spec: ClusterMixpanelProjectSpec
    status: MixpanelProjectStatus | None = None


# --------------------------------------------------------------------------- requests


class Phase(StrEnum):
    PENDING = "Pending"
    AWAITING_APPROVAL = "AwaitingApproval"
    QUEUED = "Queued"
    SUBMITTED = "Submitted"
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class ProjectReference(Model):
    """Which MixpanelProject or ClusterMixpanelProject a request is made against."""

    kind: Literal["MixpanelProject", "ClusterMixpanelProject"] = Field(
        default="MixpanelProject",
        description="MixpanelProject (same namespace) or ClusterMixpanelProject.",
    )
    name: str = Field(
        description="Name of the project object.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )


def _inline_cap(ids: list[str]) -> list[str]:
    """The CEL rules on spec.distinctIds, for the models (same messages)."""
    if len(ids) > MAX_INLINE_IDS:
        raise ValueError(
            f"spec.distinctIds may list at most {MAX_INLINE_IDS} ids: {INLINE_CAP_HINT}"
        )
    if sum(len(i.encode()) for i in ids) > MAX_INLINE_ID_BYTES:
        raise ValueError(
            f"spec.distinctIds may hold at most {MAX_INLINE_ID_BYTES} bytes of ids in all: "
            f"{INLINE_CAP_HINT}"
        )
    return ids


DistinctId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="A Mixpanel distinct id.",
        json_schema_extra=validations(
            cel("self.trim().size() > 0", "distinct ids must not be blank")
        ),
    ),
]


class DistinctIdsSource(Model):
    """Where a long or sensitive list of distinct ids is kept."""

    secret_key_ref: SecretKeySelector = Field(
        description="Secret key (same namespace) whose value lists the distinct ids, one per "
        "line or as a JSON array of strings.",
    )


class DataSubjectRequestSpec(Model):
    """A data subject's request to delete or retrieve their data in one Mixpanel project.

    What is asked (project, type, compliance and disclosure type, ids, receivedAt)
    is immutable once accepted; ttlSecondsAfterFinished may change and dryRun may be
    switched off.
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.distinctIds) != has(self.distinctIdsFrom)",
                "exactly one of spec.distinctIds or spec.distinctIdsFrom must be set",
            ),
            cel(
                "!has(self.disclosureType) || (self.type == 'Retrieval' && "
                "self.complianceType == 'CCPA')",
                "spec.disclosureType is only allowed for CCPA retrievals "
                "(type: Retrieval, complianceType: CCPA)",
                ".disclosureType",
            ),
            immutable("projectRef", optional=False),
            immutable("type", optional=False),
            immutable("complianceType", optional=False),
            immutable("disclosureType", optional=True),
            immutable("distinctIds", optional=True),
            immutable("distinctIdsFrom", optional=True),
            immutable("receivedAt", optional=True),
            immutable("requestedBy", optional=True),
            cel(
                "!has(oldSelf.approvedBy) || "
                "(has(self.approvedBy) && self.approvedBy == oldSelf.approvedBy)",
                "spec.approvedBy cannot be changed or removed once set",
                ".approvedBy",
                "FieldValueForbidden",
            ),
            cel(
                "!self.dryRun || oldSelf.dryRun",
                "spec.dryRun can be switched off to carry out the request, never switched on",
                ".dryRun",
                "FieldValueForbidden",
            ),
        )
    )

    project_ref: ProjectReference = Field(description="The Mixpanel project to act on.")
    type: RequestType = Field(
        description="Deletion (erase the ids' events and profiles) or Retrieval (export them)."
    )
    compliance_type: ComplianceType = Field(
        default=ComplianceType.GDPR,
        description="The law the request is made under, GDPR or CCPA; sets the statutory "
        "deadline (GDPR one month, CCPA 45 days).",
    )
    disclosure_type: DisclosureType | None = Field(
        default=None,
        description="For CCPA retrievals only: Data (everything), Categories or Sources.",
    )
    distinct_ids: (
        Annotated[
            list[DistinctId],
            Field(
                min_length=1,
                max_length=MAX_INLINE_IDS_SCHEMA,
                json_schema_extra=validations(
                    cel(
                        f"self.size() <= {MAX_INLINE_IDS}",
                        f"spec.distinctIds may list at most {MAX_INLINE_IDS} ids: "
                        f"{INLINE_CAP_HINT}",
                    ),
                    cel(
                        f"self.map(i, bytes(i).size()).sum() <= {MAX_INLINE_ID_BYTES}",
                        f"spec.distinctIds may hold at most {MAX_INLINE_ID_BYTES} bytes of ids in "
                        f"all: {INLINE_CAP_HINT}",
                    ),
                    **{"x-kubernetes-list-type": "set"},
                ),
            ),
            AfterValidator(_inline_cap),
        ]
        | None
    ) = Field(
        default=None,
        description=f"The data subject's distinct ids, distinct and non-blank: at most "
        f"{MAX_INLINE_IDS} ids and {MAX_INLINE_ID_BYTES} bytes in all (what kubectl apply, "
        "client- and server-side, can store). Use distinctIdsFrom for longer or sensitive lists.",
    )
    distinct_ids_from: DistinctIdsSource | None = Field(
        default=None,
        description="Read the distinct ids from a Secret instead of listing them inline.",
    )
    received_at: datetime | None = Field(
        default=None,
        description="When the data subject asked; the statutory clock starts here (default: "
        "the object's creation).",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Delete this object (and its result Secret) this many seconds after it "
        "finished. Unset: keep it.",
    )
    dry_run: bool = Field(
        default=False,
        description="Plan the Mixpanel tasks and show them in status without calling Mixpanel.",
    )
    requested_by: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Who asks: the user name of whoever creates the request (the admission "
        "policy refuses any other). Needed where the project requires approval.",
    )
    approved_by: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Who approved: set by the approver, naming themselves, once; never the "
        "requester (checked at admission). Only where the project requires approval.",
    )


class TaskPhase(StrEnum):
    """Where one Mixpanel task (a MixpanelTask object) stands, as the operator sees it."""

    #: The task is written down; the create call was not answered yet (or its answer was lost).
    CREATING = "Creating"
    #: Mixpanel accepted the task (PENDING, STAGING or UNKNOWN): still cancellable.
    SUBMITTED = "Submitted"
    #: Mixpanel started the task (STARTED): no longer cancellable.
    STARTED = "Started"
    #: Mixpanel reported SUCCESS: every id of the task is done.
    SUCCEEDED = "Succeeded"
    #: Mixpanel reported FAILURE or NOT_FOUND, or refused the create call.
    FAILED = "Failed"
    #: The task was cancelled outside the operator (REVOKED).
    REVOKED = "Revoked"
    #: The operator cancelled it (a request it served was deleted) or never sent it; the ids
    #: of the requests that remain were queued again.
    CANCELLED = "Cancelled"
    #: Mixpanel refused it because some of its ids were already being deleted; those ids
    #: follow (or wait for) the running task in a task of their own, the rest were queued again.
    SPLIT = "Split"
    #: The create call's answer was lost too many times; its ids are not sent again.
    LOST = "Lost"

    @property
    def terminal(self) -> bool:
        return self not in (TaskPhase.CREATING, TaskPhase.SUBMITTED, TaskPhase.STARTED)


class TaskReference(Model):
    """One Mixpanel task (MixpanelTask object) that covers a slice of this request's ids."""

    name: str = Field(description="Name of the MixpanelTask object.", max_length=253)
    tracking_id: str | None = Field(
        default=None,
        max_length=256,
        description="Mixpanel's tracking id; absent while the create call is unanswered.",
    )
    start: int = Field(ge=0, description="First index (inclusive) of this request's ids.")
    end: int = Field(ge=0, description="Last index (exclusive) of this request's ids.")
    phase: TaskPhase = Field(description="Where the task stands (see MixpanelTask status.phase).")
    attempt: int = Field(default=1, ge=1, description="Submission attempt for this slice.")
    submitted_at: datetime | None = Field(
        default=None, description="When Mixpanel accepted the task."
    )
    message: str | None = Field(
        default=None, max_length=1024, description="Why the task ended as it did."
    )


class LocalObjectReference(Model):
    """A named object in the same namespace."""

    name: str = Field(description="Name of the object.", max_length=253)


class ApprovalRecord(Model):
    """The four-eyes trail of a request."""

    requested_by: str | None = Field(default=None, max_length=256, description="Who asked.")
    approved_by: str | None = Field(default=None, max_length=256, description="Who approved.")
    approved_at: datetime | None = Field(
        default=None, description="When the operator first saw the approval."
    )


class RetryRecord(Model):
    """The last retry asked for with the annotation mixpaneldsr.io/retry."""

    token: str = Field(max_length=256, description="The annotation's value that was honoured.")
    at: datetime = Field(description="When the operator honoured it.")


class DataSubjectRequestStatus(Model):
    """Observed progress of the request."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation last reconciled."
    )
    phase: Phase | None = Field(
        default=None,
        description="Pending, AwaitingApproval, Queued, Submitted, InProgress, Succeeded, Failed "
        "or Cancelled.",
    )
    conditions: ConditionList | None = None
    ids_total: int | None = Field(default=None, ge=0, description="Distinct ids in the request.")
    ids_done: int | None = Field(
        default=None, ge=0, description="Ids whose Mixpanel task reached SUCCESS."
    )
    ids_failed: int | None = Field(
        default=None, ge=0, description="Ids whose task failed beyond the retry budget."
    )
    progress: str | None = Field(
        default=None, max_length=64, description="Ids done/total, for the printer columns."
    )
    deadline: datetime | None = Field(
        default=None,
        description="Statutory deadline: GDPR one month, CCPA 45 days from receivedAt or creation.",
    )
    tasks: list[TaskReference] | None = Field(
        default=None,
        description="Every Mixpanel task that covers this request, oldest first; a later task "
        "overrides an earlier one for the ids they share. The MixpanelTask objects hold the rest.",
    )
    planned_tasks: int | None = Field(
        default=None, ge=0, description="For a dry run: how many Mixpanel tasks it would take."
    )
    result_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="For a finished retrieval: the Secret (owned by this request) that holds "
        "the export link.",
    )
    ids_digest: str | None = Field(
        default=None,
        max_length=80,
        description="HMAC-SHA256 of the distinct ids as first read, keyed with the "
        "installation's key (nobody without it can confirm a guessed id); a Secret changed "
        "afterwards is refused rather than mixing two lists.",
    )
    completion_time: datetime | None = Field(
        default=None, description="When the request reached Succeeded, Failed or Cancelled."
    )
    approval: ApprovalRecord | None = Field(
        default=None, description="Who asked and who approved, where approval is required."
    )
    last_retry: RetryRecord | None = Field(
        default=None,
        description="The last retry of failed ids (a new value of the annotation "
        "mixpaneldsr.io/retry): ids whose tasks failed before it are sent again.",
    )


class DataSubjectRequest(Model):
    """A GDPR/CCPA data subject request against one Mixpanel project (short name dsr)."""

    spec: DataSubjectRequestSpec
    status: DataSubjectRequestStatus | None = None


# --------------------------------------------------------------------------- the ledger

#: Most request slices one Mixpanel task may serve (one id each at Mixpanel's 2000 limit).
MAX_TASK_MEMBERS = MAX_IDS_PER_REQUEST


class TaskMember(Model):
    """One request's slice of a Mixpanel task: ``ids[start:end]`` of that request."""

    namespace: str = Field(description="Namespace of the DataSubjectRequest.", max_length=63)
    name: str = Field(description="Name of the DataSubjectRequest.", max_length=253)
    uid: str = Field(description="metadata.uid of the DataSubjectRequest.", max_length=64)
    start: int = Field(ge=0, description="First index (inclusive) of the request's ids.")
    end: int = Field(ge=1, description="Last index (exclusive) of the request's ids.")
    attempt: int = Field(default=1, ge=1, description="Submission attempt of this slice.")


class MixpanelTaskSpec(Model):
    """One Mixpanel task, written by the operator before its create call; immutable.

    Holds no distinct id: the members name request slices, and the digest is keyed with
    the installation's key.
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("self == oldSelf", "spec is immutable: it records what was sent to Mixpanel")
        )
    )

    project_ref: ProjectReference = Field(
        description="The project (in this namespace for a MixpanelProject)."
    )
    type: RequestType = Field(description="Deletion or Retrieval.")
    compliance_type: ComplianceType = Field(description="GDPR or CCPA.")
    disclosure_type: DisclosureType | None = Field(
        default=None, description="For CCPA retrievals: Data, Categories or Sources."
    )
    members: list[TaskMember] = Field(
        min_length=1,
        max_length=MAX_TASK_MEMBERS,
        description="The request slices whose ids this task holds, in the order sent.",
    )
    id_count: int = Field(ge=1, le=MAX_IDS_PER_REQUEST, description="Distinct ids sent.")
    ids_digest: str = Field(
        max_length=80,
        description="HMAC-SHA256 of the ids sent, keyed with the installation's key: checks "
        "that a re-sent task holds the same ids, and lets nobody without the key confirm one.",
    )
    sequence: int = Field(
        ge=0,
        description="Order among the project's tasks: a later task overrides an earlier one "
        "for the request slices they share.",
    )
    retry_of: str | None = Field(
        default=None,
        max_length=253,
        description="The task whose failure or 409 this one carries on, if any.",
    )


class MixpanelTaskStatus(Model):
    """What the operator last saw of the Mixpanel task."""

    phase: TaskPhase | None = Field(default=None, description="Where the task stands.")
    conditions: ConditionList | None = None
    tracking_id: str | None = Field(
        default=None, max_length=256, description="Mixpanel's tracking id, once created."
    )
    mixpanel_state: TaskState | None = Field(
        default=None, description="The state Mixpanel last reported."
    )
    subject_request_id: str | None = Field(
        default=None,
        max_length=64,
        description="The subject_request_id of the create call Mixpanel accepted (projects "
        "with statusCallbacks): how its status callbacks name the task.",
    )
    adopted: bool | None = Field(
        default=None,
        description="True when the tracking id is another task's that Mixpanel named in a 409 "
        "for exactly these ids (it already deletes them).",
    )
    create_calls: int | None = Field(
        default=None, ge=0, description="How many times the create call was sent."
    )
    lost_answers: int | None = Field(
        default=None, ge=0, description="How many create calls had their answer lost."
    )
    not_created: int | None = Field(
        default=None,
        ge=0,
        description="How many create calls made no task (5xx, 429 or an error answer after "
        "the client's own retries): the wait before the next doubles each time.",
    )
    ambiguous: bool | None = Field(
        default=None,
        description="True when a create call's answer was lost (crash or timeout after "
        "sending): Mixpanel may hold a duplicate task.",
    )
    next_attempt_at: datetime | None = Field(
        default=None, description="When an unanswered or refused create is tried again."
    )
    submitted_at: datetime | None = Field(
        default=None, description="When Mixpanel accepted the task."
    )
    checked_at: datetime | None = Field(
        default=None, description="When the task's state was last read from Mixpanel."
    )
    completion_time: datetime | None = Field(
        default=None, description="When the task reached a final phase."
    )
    message: str | None = Field(
        default=None, max_length=1024, description="Why the task is where it is."
    )


class MixpanelTask(Model):
    """One Mixpanel task: the operator's ledger (short name mpt); users never write it."""

    spec: MixpanelTaskSpec
    status: MixpanelTaskStatus | None = None


# --------------------------------------------------------------------------- receipts

#: A digest field holds at most one task's ids (2,000 x 8 bytes, base64).
DIGESTS_FIELD_CHARS = 4 * ((MAX_IDS_PER_REQUEST * 8 + 2) // 3)
#: Tasks plus chunks of unsent digests in one receipt object (about 540 KB at most).
MAX_RECEIPT_ITEMS = 25


class RequestIdentity(Model):
    """Which DataSubjectRequest a receipt is about."""

    namespace: str = Field(max_length=63, description="Namespace of the request.")
    name: str = Field(max_length=253, description="Name of the request.")
    uid: str = Field(max_length=64, description="metadata.uid of the request.")


class ReceiptProject(Model):
    """The project the request was carried out against."""

    kind: Literal["MixpanelProject", "ClusterMixpanelProject"] = Field(
        description="MixpanelProject or ClusterMixpanelProject."
    )
    name: str = Field(max_length=253, description="Name of the project object.")
    region: Region | None = Field(
        default=None, description="Data residency region the calls went to."
    )
    token: str | None = Field(
        default=None, max_length=256, description="The Mixpanel project token (public)."
    )


class ReceiptTask(Model):
    """One Mixpanel task that held some of the request's ids."""

    name: str = Field(max_length=253, description="Name of the MixpanelTask object.")
    tracking_id: str | None = Field(
        default=None, max_length=256, description="Mixpanel's tracking id."
    )
    phase: TaskPhase = Field(description="Where the task ended (Succeeded: its ids are done).")
    mixpanel_state: TaskState | None = Field(
        default=None, description="The state Mixpanel last reported."
    )
    submitted_at: datetime | None = Field(
        default=None, description="When Mixpanel accepted the task."
    )
    completed_at: datetime | None = Field(
        default=None, description="When the task reached its final phase (SUCCESS time)."
    )
    id_count: int = Field(ge=0, description="How many of this request's ids the task held.")
    id_digests: str = Field(
        default="",
        max_length=DIGESTS_FIELD_CHARS,
        description="Keyed digests of those ids: base64 of sorted 8-byte HMAC-SHA256 prefixes "
        "under the installation's key (kubectl dsr receipts --check-id).",
    )


class ReceiptSpec(Model):
    """What happened to one request: written once by the operator when the request finished."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("self == oldSelf", "a receipt is immutable: it is the record an auditor reads")
        )
    )

    request: RequestIdentity = Field(description="The request this receipt is about.")
    part: int = Field(
        default=1, ge=1, description="Which part this is (long requests take several)."
    )
    parts: int = Field(default=1, ge=1, description="How many parts the receipt has.")
    project: ReceiptProject = Field(description="The Mixpanel project and its region.")
    type: RequestType = Field(description="Deletion or Retrieval.")
    compliance_type: ComplianceType = Field(description="GDPR or CCPA.")
    disclosure_type: DisclosureType | None = Field(
        default=None, description="For CCPA retrievals: Data, Categories or Sources."
    )
    labels: dict[str, str] | None = Field(
        default=None, description="The request's labels the project chose to copy."
    )
    annotations: dict[str, str] | None = Field(
        default=None, description="The request's annotations the project chose to copy."
    )
    requested_by: str | None = Field(
        default=None, max_length=256, description="Who asked (spec.requestedBy)."
    )
    approved_by: str | None = Field(
        default=None, max_length=256, description="Who approved (spec.approvedBy)."
    )
    approved_at: datetime | None = Field(
        default=None, description="When the operator first saw the approval."
    )
    received_at: datetime = Field(
        description="When the person asked (spec.receivedAt, else the request's creation)."
    )
    deadline: datetime = Field(description="The statutory deadline.")
    completed_at: datetime = Field(description="When the request finished.")
    deadline_met: bool = Field(
        description="True when the request Succeeded at or before its deadline."
    )
    outcome: Phase = Field(description="Succeeded, Failed or Cancelled.")
    reason: str | None = Field(
        default=None, max_length=128, description="The Ready condition's reason at the end."
    )
    message: str | None = Field(
        default=None, max_length=1024, description="The Ready condition's message at the end."
    )
    retry: str | None = Field(
        default=None,
        max_length=256,
        description="The retry (annotation mixpaneldsr.io/retry) this outcome followed, if any.",
    )
    id_count: int = Field(ge=0, description="Distinct ids in the request.")
    ids_done: int = Field(ge=0, description="Ids under a task that reached SUCCESS.")
    ids_digest: str | None = Field(
        default=None,
        max_length=80,
        description="Keyed digest of the whole id list (the request's status.idsDigest).",
    )
    tasks: list[ReceiptTask] = Field(
        default_factory=list,
        max_length=MAX_RECEIPT_ITEMS,
        description="The Mixpanel tasks that held the request's ids (this part's), oldest "
        "first: for an id held by several, the last one tells its outcome.",
    )
    unsent_id_digests: list[Annotated[str, Field(max_length=DIGESTS_FIELD_CHARS)]] = Field(
        default_factory=list,
        max_length=MAX_RECEIPT_ITEMS,
        description="Keyed digests (as in tasks, in chunks) of ids no task held.",
    )
    digest_algorithm: Literal["hmac-sha256-64"] = Field(
        default="hmac-sha256-64",
        description="How id digests are made: the first 8 bytes of HMAC-SHA256(key, id).",
    )
    issued_at: datetime = Field(description="When the operator wrote the receipt.")
    retain_until: datetime = Field(
        description="After this the operator removes the receipt (--receipt-retention)."
    )
    seal: str = Field(
        max_length=80,
        description="HMAC-SHA256 of this spec (without seal) under the installation's key: "
        "a receipt not written by the operator, or altered, does not verify.",
    )


class DataSubjectRequestReceipt(Model):
    """The immutable record of a finished request, for auditors (short name dsrr)."""

    spec: ReceiptSpec

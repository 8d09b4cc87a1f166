"""Hostile and broken input: the corpus that tests/e2e/test_hostile.py applies in one go.

Each case is a few objects and what a careful person expects of them: refused by the API
server with a message naming the field, or admitted and ending clearly (Succeeded where the
input is legitimately valid, else a Stalled condition whose reason and message say what to
fix). Requests, Secrets and projects of a case are named after it; the test puts them in one
namespace beside ~20 ordinary one-id deletions against a healthy project (``GOOD``).

A case may bring projects of its own (``Project``: registered in the sandbox, its token in a
Secret), so that what Mixpanel saw for that project is what the case caused. Mid-flight steps
(deleting a Secret while a task is held at Mixpanel, restarting the operator, ...) are carried
out by the test, keyed by case id; ``during`` says what they are.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mixpanel_dsr.planning import MAX_IDS_PER_REQUEST_OBJECT

Manifest = dict[str, Any]

API = "mixpaneldsr.io/v1alpha1"
#: The healthy project (made by the test) that the ordinary requests and most valid cases use.
GOOD = "good"
#: Filled in by the test: a second namespace, a cluster-scoped project's name, the user
#: name kubectl acts as.
OTHER_NAMESPACE = "<other-namespace>"
CLUSTER_PROJECT = "<cluster-project>"
ME = "<me>"
#: The value a project's Secret holds when it should be the token the sandbox accepts.
ACCEPTED = "<accepted>"
#: The API server's limit on a Secret's data (all keys together).
SECRET_LIMIT = 1024 * 1024
#: 1,000,001 distinct ids (one over the operator's MAX_IDS_PER_REQUEST_OBJECT) need at
#: least one character and one line break each: no Secret can hold them, so that limit is
#: out of reach; a Secret over 1 MiB is refused by the API server instead.
assert 2 * (MAX_IDS_PER_REQUEST_OBJECT + 1) - 1 > SECRET_LIMIT
#: A Secret just under the limit: one 8-character id a line (116,508 ids).
MIB_IDS = SECRET_LIMIT // 9
MIB_TEXT = "".join(f"{n:08d}\n" for n in range(MIB_IDS))
assert len(MIB_TEXT) < SECRET_LIMIT


# --------------------------------------------------------------------------- what is expected


@dataclass(frozen=True)
class Refused:
    """Refused at admission (or by kubectl itself, ``by="kubectl"``): the message names
    ``field`` and holds every fragment."""

    field: str | None
    fragments: tuple[str, ...] = ()
    by: Literal["api-server", "kubectl"] = "api-server"


@dataclass(frozen=True)
class Succeeds:
    """Every request of the case ends Succeeded and exactly ``ids`` reached Mixpanel (for a
    case with projects of its own: nothing else reached them). ``ids=None``: too many to
    list, ``total`` counts them. ``or_stalls``: ending Stalled with this reason (and
    sending nothing) is an acceptable alternative."""

    ids: tuple[str, ...] | None
    total: int | None = None
    or_stalls: str | None = None


@dataclass(frozen=True)
class Stalls:
    """The request stays in ``phase`` with Stalled: ``reason`` and a message holding every
    fragment and none of ``not_in_message``; where a project is the problem, its Ready is
    False with ``project_reason``. Only ``ids`` (default none) reached the case's own
    projects. ``nowhere``: strings that must appear in no status, Event or log line."""

    reason: str
    message: tuple[str, ...]
    phase: str = "Pending"
    project_reason: str | None = None
    not_in_message: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    nowhere: tuple[str, ...] = ()


@dataclass(frozen=True)
class Deleted:
    """The request is deleted while in ``phase``; then what must follow:

    * ``nothing-sent``: no Mixpanel task for the case's ids, ever;
    * ``kept``: its ids stay deleted once (it had Succeeded);
    * ``cancelled``: its held task is cancelled (REVOKED; MixpanelTask Cancelled), and the
      same manifest created again (a new object) is carried out by a new task;
    * ``completes``: its task had started: no cancel is tried, the task completes;
    * ``no-more-tasks``: it had ended (Failed, Cancelled): no Mixpanel call follows.
    """

    phase: str
    then: Literal["nothing-sent", "kept", "cancelled", "completes", "no-more-tasks"]
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recovers:
    """First ``stalled`` is shown (within ``within`` seconds of the mid-flight step); the test
    then fixes what the message says and the request ends Succeeded with ``ids`` sent.
    ``or_follows``: finishing without stalling (the task followed through) is fine too."""

    stalled: Stalls
    ids: tuple[str, ...]
    within: float = 30.0
    or_follows: bool = False


@dataclass(frozen=True)
class RemovedAfterTTL:
    """Succeeds with ``ids``, then is deleted by ttlSecondsAfterFinished (set by an edit)."""

    ids: tuple[str, ...]


@dataclass(frozen=True)
class KeepsItsProject:
    """The project's ``field`` is changed (to another Mixpanel project) while a task is in
    flight. Either the edit is refused, naming the field, or the task is still followed
    where it was created: the request ends Succeeded with ``ids`` deleted in the project it
    was asked for, and nothing goes to the other one."""

    field: str
    ids: tuple[str, ...]


Outcome = Refused | Succeeds | Stalls | Deleted | Recovers | RemovedAfterTTL | KeepsItsProject


@dataclass(frozen=True)
class Project:
    """A MixpanelProject (or ClusterMixpanelProject) a case brings, with its token Secret."""

    name: str
    spec: Mapping[str, Any] = field(default_factory=dict)
    #: What the Secret's ``token`` key holds: ACCEPTED, other text or bytes; None: no Secret.
    oauth: str | bytes | None = ACCEPTED
    #: The Secret's key (the project always refers to ``token``).
    secret_key: str = "token"
    #: The sandbox region it is registered in (its spec may say another).
    region: str = "US"
    namespace: str | None = None
    kind: str = "MixpanelProject"
    #: requestInterval 100ms and no sandbox rate limit (many tasks).
    fast: bool = False
    #: Hold the project's first Mixpanel task in this state (released by the test), or end
    #: every task of the project so (FAILURE, REVOKED: as if done outside the operator).
    hold: Literal["PENDING", "STARTED", "FAILURE", "REVOKED"] | None = None


@dataclass(frozen=True)
class Edit:
    """An edit of an accepted request: a JSON merge patch, or ``kubectl replace`` of the
    object with ``patch`` merged into its spec."""

    target: str
    patch: Mapping[str, Any]
    how: Literal["merge", "replace"] = "merge"


@dataclass(frozen=True)
class Case:
    id: str
    objects: tuple[Manifest, ...]
    outcome: Outcome
    projects: tuple[Project, ...] = ()
    #: How the objects are sent to kubectl.
    apply_as: Literal["json", "yaml"] = "json"
    #: Created only once this request of the case is Submitted.
    after_submitted: str | None = None
    edit: Edit | None = None
    #: What the test does mid-flight (see test_hostile.py).
    during: str = ""
    #: A known operator bug: the case's verdict is expected to fail (xfail, strict).
    bug: str | None = None
    #: The request(s) whose status is judged (default: the one named after the case).
    requests: tuple[str, ...] = ()

    @property
    def judged(self) -> tuple[str, ...]:
        return self.requests or (self.id,)


# --------------------------------------------------------------------------- manifests


def request(name: str, ids: Any = None, project: str = GOOD, **spec: Any) -> Manifest:
    body: dict[str, Any] = {"projectRef": {"name": project}, "type": "Deletion", **spec}
    if ids is not None:
        body["distinctIds"] = ids
    return {
        "apiVersion": API,
        "kind": "DataSubjectRequest",
        "metadata": {"name": name},
        "spec": body,
    }


def from_secret(name: str, secret: str, key: str = "ids", **spec: Any) -> Manifest:
    return request(name, distinctIdsFrom={"secretKeyRef": {"name": secret, "key": key}}, **spec)


def secret(name: str, value: str | bytes, key: str = "ids") -> Manifest:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {key: base64.b64encode(raw).decode()},
    }


def mpp(name: str, kind: str = "MixpanelProject", **spec: Any) -> Manifest:
    base = {"token": "abc123", "credentialsSecretRef": {"name": f"{name}-gdpr"}, **spec}
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": base}


def own(name: str, ids: list[str], **spec: Any) -> tuple[Manifest, ...]:
    """A one-request case on a project of its own, named like the case."""
    return (request(name, ids, project=name, **spec),)


def refused(
    case_id: str, manifest: Manifest, field_: str | None, *fragments: str, **kw: Any
) -> Case:
    manifest["metadata"]["name"] = case_id
    outcome = Refused(field_, fragments, by=kw.pop("by", "api-server"))
    return Case(case_id, (manifest,), outcome, **kw)


def ids_case(case_id: str, ids: list[str], **kw: Any) -> Case:
    """Valid, if odd, inline ids on the healthy project: each reaches Mixpanel as written."""
    return Case(case_id, (request(case_id, ids),), Succeeds(tuple(ids)), **kw)


def secret_case(case_id: str, value: str | bytes, outcome: Outcome, **kw: Any) -> Case:
    project = kw.pop("project", GOOD)
    return Case(
        case_id,
        (secret(f"{case_id}-ids", value), from_secret(case_id, f"{case_id}-ids", project=project)),
        outcome,
        **kw,
    )


def invalid_ids(
    case_id: str, value: str | bytes, *message: str, reason: str = "InvalidIds"
) -> Case:
    return secret_case(case_id, value, Stalls(reason, message))


def project_problem(
    case_id: str, project: Project, project_reason: str, *message: str, **kw: Any
) -> Case:
    """A request against a project that cannot work: the project says why, the request
    points to it, nothing is sent."""
    outcome = Stalls(
        "ProjectNotReady",
        message,
        project_reason=project_reason,
        not_in_message=kw.pop("not_in_message", ()),
        nowhere=kw.pop("nowhere", ()),
    )
    return Case(case_id, own(case_id, [f"{case_id}-person"]), outcome, projects=(project,), **kw)


LINE_SEPARATORS = "keep\u2028this\nother\x1cpart\nff\x0cx\nnel\x85end\n"
HEADER_BREAKING = "oauth-abc\r\nX-Evil: 1"
#: A password in spec.apiBaseURL, which must not be echoed.
URL_PASSWORD = "hunter2-in-url"
PROJECT_EDIT_BUG = (
    "A MixpanelProject's spec.token changed (to another Mixpanel project) while a task is in "
    "flight: the edit is admitted, the next status check asks the other project, gets "
    "NOT_FOUND, marks the task Failed ('Mixpanel no longer knows the task (NOT_FOUND)'), and "
    "sends the ids again to the other project; the request ends Succeeded although the "
    "deletion in the project it was asked for was never followed to its end (the task is "
    "abandoned there). MixpanelTask records neither the token nor the region it was created "
    "under, and MixpanelProject.spec.token is mutable"
)


# --------------------------------------------------------------------------- the corpus

_BLANKS = {
    "id-nbsp": "\u00a0",
    "id-ideographic-space": "\u3000",
    "id-line-separator": "\u2028",
    "id-next-line": "\u0085",
    "id-whitespace": " \t\n ",
}

REFUSED: list[Case] = [
    # ---- wrong types
    refused("ids-number", request("", 42), "spec.distinctIds", "must be of type array"),
    refused("ids-string", request("", "alice"), "spec.distinctIds", "must be of type array"),
    refused("ids-object", request("", {"alice": "x"}), "spec.distinctIds", "unknown field"),
    refused("ids-empty-object", request("", {}), "spec.distinctIds", "must be of type array"),
    refused("ids-numbers", request("", [1, 2]), "spec.distinctIds[0]", "must be of type string"),
    refused("ids-null-item", request("", [None]), "spec.distinctIds[0]", "must be of type string"),
    refused("ids-nested", request("", [["a"]]), "spec.distinctIds[0]", "must be of type string"),
    refused(
        "ids-mixed-types",
        request("", ["ok", 1, True]),
        "spec.distinctIds[1]",
        "spec.distinctIds[2]",
        "must be of type string",
    ),
    refused(
        "dry-run-string", request("", ["u"], dryRun="yes"), "spec.dryRun", "must be of type boolean"
    ),
    refused(
        "ttl-string",
        request("", ["u"], ttlSecondsAfterFinished="10"),
        "spec.ttlSecondsAfterFinished",
        "must be of type integer",
    ),
    refused(
        "ttl-negative",
        request("", ["u"], ttlSecondsAfterFinished=-5),
        "spec.ttlSecondsAfterFinished",
        "greater than or equal to 0",
    ),
    refused(
        "project-ref-string",
        {
            **request("", ["u"]),
            "spec": {"projectRef": "good", "type": "Deletion", "distinctIds": ["u"]},
        },
        "spec.projectRef",
        "must be of type object",
    ),
    # ---- sizes
    refused("ids-empty-list", request("", []), "spec.distinctIds", "at least 1 item"),
    refused(
        "ids-5001-inline",
        request("", [f"u{n}" for n in range(5001)]),
        "spec.distinctIds",
        "at most 5000 ids",
        "distinctIdsFrom",
    ),
    refused(
        "id-256-chars", request("", ["x" * 256]), "spec.distinctIds[0]", "may not be more than 255"
    ),
    refused(
        "id-256-emoji",
        request("", ["\U0001f642" * 256]),
        "spec.distinctIds[0]",
        "may not be more than 255",
    ),
    # ---- blank ids (CEL trim() knows Unicode white space, not U+200B: see zero-width-ids)
    refused("id-empty-string", request("", ["ok", ""]), "spec.distinctIds[1]", "at least 1 chars"),
    *[
        refused(k, request("", ["ok", v]), "spec.distinctIds[1]", "must not be blank")
        for k, v in _BLANKS.items()
    ],
    # ---- duplicates (x-kubernetes-list-type: set compares exact strings)
    refused(
        "ids-duplicate", request("", ["a", "b", "a"]), "spec.distinctIds[2]", "Duplicate value"
    ),
    refused(
        "ids-duplicate-unicode",
        request("", ["Jos\u00e9", "Jos\u00e9"]),
        "spec.distinctIds[1]",
        "Duplicate value",
    ),
    # ---- id sources, enums, references
    refused(
        "no-id-source", request(""), None, "exactly one of spec.distinctIds or spec.distinctIdsFrom"
    ),
    refused(
        "both-id-sources",
        request("", ["u"], distinctIdsFrom={"secretKeyRef": {"name": "s", "key": "k"}}),
        None,
        "exactly one of spec.distinctIds or spec.distinctIdsFrom",
    ),
    refused(
        "ids-secret-bad-name",
        from_secret("", "Ids!"),
        "spec.distinctIdsFrom.secretKeyRef.name",
        "should match",
    ),
    refused(
        "ids-secret-bad-key",
        from_secret("", "ids", key="a/b"),
        "spec.distinctIdsFrom.secretKeyRef.key",
        "should match",
    ),
    refused(
        "type-lowercase", request("", ["u"], type="deletion"), "spec.type", "Unsupported value"
    ),
    refused(
        "compliance-lowercase",
        request("", ["u"], complianceType="gdpr"),
        "spec.complianceType",
        "Unsupported value",
    ),
    refused(
        "disclosure-gdpr-retrieval",
        request("", ["u"], type="Retrieval", disclosureType="Data"),
        "spec.disclosureType",
        "only allowed for CCPA retrievals",
    ),
    refused(
        "disclosure-ccpa-deletion",
        request("", ["u"], complianceType="CCPA", disclosureType="Data"),
        "spec.disclosureType",
        "only allowed for CCPA retrievals",
    ),
    refused(
        "project-ref-kind-lowercase",
        request("", ["u"], projectRef={"name": "good", "kind": "mixpanelproject"}),
        "spec.projectRef.kind",
        "Unsupported value",
    ),
    # A reference is always to this namespace (or to a cluster project): no field for another.
    refused(
        "project-ref-namespace",
        request("", ["u"], projectRef={"name": "good", "namespace": OTHER_NAMESPACE}),
        "spec.projectRef.namespace",
        "unknown field",
    ),
    refused(
        "unknown-field", request("", ["u"], distinctIdz=["u"]), "spec.distinctIdz", "unknown field"
    ),
    # YAML cannot carry a lone surrogate: kubectl's own parser refuses it (JSON can:
    # see id-lone-surrogate-json).
    refused(
        "id-lone-surrogate-yaml",
        request("", ["\udc80x"]),
        None,
        "invalid Unicode character escape",
        apply_as="yaml",
        by="kubectl",
    ),
    # ---- MixpanelProject
    refused("region-unknown", mpp("", region="APAC"), "spec.region", "Unsupported value"),
    refused("region-lowercase", mpp("", region="eu"), "spec.region", "Unsupported value"),
    refused(
        "interval-too-short",
        mpp("", requestInterval="10ms"),
        "spec.requestInterval",
        "between 100ms and 1h",
    ),
    refused(
        "interval-us-too-short",
        mpp("", requestInterval="99999us"),
        "spec.requestInterval",
        "between 100ms and 1h",
    ),
    refused(
        "interval-too-long",
        mpp("", requestInterval="2h"),
        "spec.requestInterval",
        "between 100ms and 1h",
    ),
    refused(
        "interval-not-duration",
        mpp("", requestInterval="1 second"),
        "spec.requestInterval",
        "should match",
    ),
    refused(
        "max-ids-zero",
        mpp("", maxIdsPerRequest=0),
        "spec.maxIdsPerRequest",
        "greater than or equal to 1",
    ),
    refused(
        "max-ids-2001",
        mpp("", maxIdsPerRequest=2001),
        "spec.maxIdsPerRequest",
        "less than or equal to 2000",
    ),
    refused(
        "max-ids-string",
        mpp("", maxIdsPerRequest="100"),
        "spec.maxIdsPerRequest",
        "must be of type integer",
    ),
    refused(
        "api-url-ftp",
        mpp("", apiBaseURL="ftp://mirror.example.com/api"),
        "spec.apiBaseURL",
        "absolute http or https URL",
    ),
    refused(
        "api-url-relative",
        mpp("", apiBaseURL="/api/app"),
        "spec.apiBaseURL",
        "absolute http or https URL",
    ),
    refused("token-non-ascii", mpp("", token="t\u00f6k"), "spec.token", "should match"),
    refused(
        "token-expiry-bad-date",
        mpp("", tokenExpiresAt="2020-13-01T00:00:00Z"),
        "spec.tokenExpiresAt",
        "date-time",
    ),
    refused(
        "cmpp-region-unknown",
        mpp("", "ClusterMixpanelProject", region="APAC"),
        "spec.region",
        "Unsupported value",
    ),
    refused(
        "cmpp-selector-malformed",
        mpp(
            "",
            "ClusterMixpanelProject",
            namespaceSelector={"matchExpressions": [{"key": "team", "operator": "In"}]},
        ),
        "spec.namespaceSelector",
        "In and NotIn need values",
    ),
    # ---- a Secret over the API server's 1 MiB
    refused(
        "ids-secret-over-1mib",
        secret("", MIB_TEXT + "x" * (SECRET_LIMIT - len(MIB_TEXT) + 1)),
        "data",
        "Too long",
        "1048576 bytes",
    ),
]

EDITS: list[Case] = [
    Case(
        "edit-target",
        (request("edit-target", ["edit-target-1"]),),
        Succeeds(("edit-target-1",)),
        during="edited after acceptance (edit-* cases): every edit of what was asked is refused",
    ),
    Case(
        "edit-distinct-ids",
        (),
        Refused("spec.distinctIds", ("immutable",)),
        edit=Edit("edit-target", {"spec": {"distinctIds": ["edit-target-1", "someone"]}}),
    ),
    Case(
        "edit-type",
        (),
        Refused("spec.type", ("immutable",)),
        edit=Edit("edit-target", {"spec": {"type": "Retrieval"}}),
    ),
    Case(
        "edit-project-ref",
        (),
        Refused("spec.projectRef", ("immutable",)),
        edit=Edit("edit-target", {"spec": {"projectRef": {"name": "elsewhere"}}}),
    ),
    Case(
        "edit-dry-run-on",
        (),
        Refused("spec.dryRun", ("never switched on",)),
        edit=Edit("edit-target", {"spec": {"dryRun": True}}),
    ),
    Case(
        "edit-replace-ids",
        (),
        Refused("spec.distinctIds", ("immutable",)),
        edit=Edit("edit-target", {"distinctIds": ["someone-else"]}, how="replace"),
    ),
    Case(
        "edit-ttl",
        (request("edit-ttl", ["edit-ttl-1"]),),
        RemovedAfterTTL(("edit-ttl-1",)),
        edit=Edit("edit-ttl", {"spec": {"ttlSecondsAfterFinished": 1}}),
        during="ttlSecondsAfterFinished set after acceptance (allowed)",
    ),
]

VALID: list[Case] = [
    ids_case(
        "unicode-ids",
        [
            "\u7528\u6237-1",
            "Jos\u00e9-u",
            "\u03a9mega",
            "\u043f\u043e\u043b\u044c\u0437\u043e\u0432\u0430\u0442\u0435\u043b\u044c",
            "\u0645\u0633\u062a\u062e\u062f\u0645",
        ],
    ),
    ids_case(
        "emoji-ids",
        [
            "\U0001f642",
            "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466-family",
            "\U0001f3f3\ufe0f\u200d\U0001f308",
        ],
    ),
    # Mixpanel's distinct ids are case-sensitive: three people, three deletions.
    ids_case("case-ids", ["Alice", "alice", "ALICE"]),
    # Inline ids are taken as written (the set rule sees four strings); a Secret trims
    # each id instead (secret-json-whitespace).
    ids_case("whitespace-ids", ["ws", " ws", "ws ", "w s"]),
    # U+200B and friends are not white space to CEL or Python: admitted and sent as is.
    ids_case("zero-width-ids", ["bob\u200b", "\u200b", "b\u200cob", "\u2060joiner", "\ufeff"]),
    ids_case("rtl-ids", ["\u202eevil", "abc\u200f", "\u200eltr", "\u05e9\u05dc\u05d5\u05dd"]),
    ids_case(
        "control-ids",
        ["a\u0001b", "bell\u0007", "esc\u001b[31m", "tab\tinside", "line\nbreak", "del\u007f"],
    ),
    # Neither YAML nor JSON refuses U+0000; the API server stores it and Mixpanel gets it.
    ids_case("nul-ids", ["nul\u0000inside", "\u0000"], apply_as="yaml"),
    # The API server's JSON decoder turns a lone surrogate into U+FFFD; that is what is stored
    # (kubectl get shows it) and sent.
    Case(
        "id-lone-surrogate-json",
        (request("id-lone-surrogate-json", ["\udc80surrogate"]),),
        Succeeds(("\ufffdsurrogate",)),
    ),
    # NFC and NFD spellings are different strings to Kubernetes and to Mixpanel.
    ids_case("nfc-nfd-ids", ["Ren\u00e9e", "Rene\u0301e"]),
    ids_case("id-255-chars", ["L" * 255]),
    ids_case("id-255-emoji", ["\U0001f600" * 255]),
    ids_case("ids-5000-inline", [f"bulk-inline-{n:04d}" for n in range(5000)]),
    Case(
        "same-id-many-requests",
        tuple(request(f"same-id-many-requests-{n}", ["shared-person"]) for n in range(5)),
        Succeeds(("shared-person",)),
        requests=tuple(f"same-id-many-requests-{n}" for n in range(5)),
    ),
    secret_case(
        "secret-lines",
        "\r\n  sid-line-a  \r\n\r\nsid-line-b\nsid-line-a\n\n",
        Succeeds(("sid-line-a", "sid-line-b"), total=2),
    ),
    secret_case(
        "secret-json",
        '["sid-json-a", "sid-json-b", "sid-json-a", "sid-\u00fcn\u00ef"]',
        Succeeds(("sid-json-a", "sid-json-b", "sid-\u00fcn\u00ef"), total=3),
    ),
    secret_case(
        "secret-json-whitespace",
        '["sid-jws", " sid-jws", "sid-jws "]',
        Succeeds(("sid-jws",), total=1),
    ),
    secret_case(
        "secret-1mib",
        MIB_TEXT,
        Succeeds(None, total=MIB_IDS),
        project="secret-1mib",
        projects=(Project("secret-1mib", fast=True),),
    ),
    Case(
        "interval-in-us",
        own("interval-in-us", ["us-1"]),
        Succeeds(("us-1",)),
        projects=(Project("interval-in-us", {"requestInterval": "1500000us"}),),
    ),
    Case(
        "max-ids-one",
        own("max-ids-one", ["one-1", "one-2", "one-3"]),
        Succeeds(("one-1", "one-2", "one-3")),
        projects=(Project("max-ids-one", {"maxIdsPerRequest": 1}, fast=True),),
    ),
    # ---- Secret formats that silently change the ids (bugs)
    secret_case(
        "secret-lines-separators",
        LINE_SEPARATORS,
        Succeeds(
            ("keep\u2028this", "other\x1cpart", "ff\x0cx", "nel\x85end"), or_stalls="InvalidIds"
        ),
        project="secret-lines-separators",
        projects=(Project("secret-lines-separators"),),
    ),
    secret_case(
        "secret-lines-bom",
        "\ufeffsid-bom-a\nsid-bom-b\n",
        Succeeds(("sid-bom-a", "sid-bom-b"), or_stalls="InvalidIds"),
        project="secret-lines-bom",
        projects=(Project("secret-lines-bom"),),
    ),
    secret_case(
        "secret-json-bom",
        '\ufeff["sid-bj-a", "sid-bj-b"]',
        Succeeds(("sid-bj-a", "sid-bj-b"), or_stalls="InvalidIds"),
        project="secret-json-bom",
        projects=(Project("secret-json-bom"),),
    ),
]

STALLED: list[Case] = [
    invalid_ids(
        "secret-json-non-strings", '["sid-ns", 1, null, {"x": 1}]', "must hold only strings"
    ),
    invalid_ids("secret-json-nested", '[["sid-nested"]]', "must hold only strings"),
    invalid_ids("secret-json-malformed", '["sid-mal-a", "sid-mal-b"', "not a valid JSON array"),
    invalid_ids("secret-json-blank", '["sid-jb", "  "]', "blank distinct id at array index 1"),
    invalid_ids("secret-blank", " \n\t\n", "holds no distinct ids"),
    invalid_ids(
        "secret-id-too-long",
        "sid-ok\n" + "y" * 256 + "\n",
        "distinct id number 2 is longer than 255 characters",
    ),
    invalid_ids(
        "secret-not-utf8", b"\xff\xfe\x00sid", "is not UTF-8 text", reason="IdsSecretKeyNotText"
    ),
    Case(
        "secret-missing",
        (from_secret("secret-missing", "no-such-ids"),),
        Stalls("IdsSecretNotFound", ("distinctIdsFrom", "no-such-ids", "not found")),
    ),
    Case(
        "secret-key-missing",
        (
            secret("secret-key-missing-ids", "sid-km"),
            from_secret("secret-key-missing", "secret-key-missing-ids", key="list"),
        ),
        Stalls("IdsSecretKeyNotFound", ("secret-key-missing-ids", "has no key 'list'")),
    ),
    Case(
        "project-missing",
        (request("project-missing", ["pm-1"], project="never-created"),),
        Stalls("ProjectNotFound", ("MixpanelProject never-created not found",)),
    ),
    # The only project of that name is in another namespace: references stay in their own.
    Case(
        "project-other-namespace",
        (request("project-other-namespace", ["pon-1"], project="elsewhere"),),
        Stalls("ProjectNotFound", ("MixpanelProject elsewhere not found", "in namespace")),
        projects=(Project("elsewhere", namespace=OTHER_NAMESPACE),),
    ),
    Case(
        "cluster-project-missing",
        (
            request(
                "cluster-project-missing",
                ["cpm-1"],
                projectRef={"kind": "ClusterMixpanelProject", "name": "no-such-cluster-project"},
            ),
        ),
        Stalls("ProjectNotFound", ("ClusterMixpanelProject no-such-cluster-project",)),
    ),
    Case(
        "cluster-project-not-selecting",
        (
            request(
                "cluster-project-not-selecting",
                ["cps-1"],
                projectRef={"kind": "ClusterMixpanelProject", "name": CLUSTER_PROJECT},
            ),
        ),
        Stalls("NamespaceNotSelected", ("namespaceSelector", "nothing was sent")),
        projects=(
            Project(
                CLUSTER_PROJECT,
                kind="ClusterMixpanelProject",
                spec={"namespaceSelector": {"matchLabels": {"mixpaneldsr.io/hostile": "never"}}},
            ),
        ),
    ),
    project_problem(
        "api-url-not-allowed",
        Project("api-url-not-allowed", {"apiBaseURL": "https://collector.example.com/api/app"}),
        "APIBaseURLNotAllowed",
        "spec.apiBaseURL",
        "--allowed-api-base-url",
    ),
    project_problem(
        "api-url-credentials",
        Project(
            "api-url-credentials",
            {"apiBaseURL": f"https://user:{URL_PASSWORD}@mixpanel.com/api/app"},
        ),
        "APIBaseURLNotAllowed",
        "spec.apiBaseURL",
        nowhere=(URL_PASSWORD,),
    ),
    project_problem(
        "project-secret-missing",
        Project("project-secret-missing", oauth=None),
        "SecretNotFound",
        "project-secret-missing-gdpr",
        "not found",
    ),
    project_problem(
        "project-secret-key-missing",
        Project("project-secret-key-missing", secret_key="oauth"),
        "SecretKeyNotFound",
        "has no key 'token'",
    ),
    project_problem(
        "project-token-not-utf8",
        Project("project-token-not-utf8", oauth=b"\xff\xfe"),
        "SecretKeyNotText",
        "is not UTF-8 text",
    ),
    project_problem(
        "project-token-wrong",
        Project("project-token-wrong", oauth="not-the-token"),
        "TokenRejected",
        "HTTP 403",
        "check the Secret",
    ),
    # Registered in US, declared EU: Mixpanel's EU host does not know the project token.
    project_problem(
        "project-wrong-region",
        Project("project-wrong-region", {"region": "EU"}),
        "TokenRejected",
        "HTTP 403",
        "check the Secret and the project token",
    ),
    project_problem(
        "project-token-header-breaking",
        Project("project-token-header-breaking", oauth=HEADER_BREAKING),
        "TokenRejected",
        "check the Secret",
        not_in_message=("HTTP None",),
    ),
    project_problem(
        "project-token-blank",
        Project("project-token-blank", oauth="  \n"),
        "TokenRejected",
        "check the Secret",
        not_in_message=("HTTP None",),
    ),
    # Mixpanel ends the task FAILURE every time: retried up to --max-attempts (3), then Failed.
    Case(
        "task-failed",
        own("task-failed", ["tf-1"]),
        Stalls("TaskFailed", ("1 ids failed", "FAILURE"), phase="Failed", ids=("tf-1",)),
        projects=(Project("task-failed", hold="FAILURE"),),
    ),
    # Someone revokes the task in Mixpanel: the request is Cancelled and says what to do.
    Case(
        "revoked-outside",
        own("revoked-outside", ["ro-1"]),
        Stalls(
            "Cancelled",
            ("outside the operator", "create a new request"),
            phase="Cancelled",
            ids=("ro-1",),
        ),
        projects=(Project("revoked-outside", hold="REVOKED"),),
    ),
    Case(
        "approval-no-requester",
        own("approval-no-requester", ["anr-1"]),
        Stalls("RequesterUnknown", ("spec.requestedBy",)),
        projects=(Project("approval-no-requester", {"approval": {}}),),
    ),
]

DELETED: list[Case] = [
    Case(
        "delete-pending",
        (request("delete-pending", ["dp-1"], project="never-created"),),
        Deleted("Pending", "nothing-sent", ("dp-1",)),
        during="deleted once Stalled ProjectNotFound",
    ),
    Case(
        "delete-stalled",
        (from_secret("delete-stalled", "no-such-ids"),),
        Deleted("Pending", "nothing-sent"),
        during="deleted once Stalled IdsSecretNotFound",
    ),
    Case(
        "delete-awaiting-approval",
        own("delete-awaiting-approval", ["daa-1"], requestedBy=ME),
        Deleted("AwaitingApproval", "nothing-sent", ("daa-1",)),
        projects=(Project("delete-awaiting-approval", {"approval": {}}),),
        during="deleted while AwaitingApproval",
    ),
    Case(
        "delete-queued",
        (request("delete-queued", ["dq-2"], project="delete-queued", type="Retrieval"),),
        Deleted("Queued", "nothing-sent", ("dq-2",)),
        projects=(Project("delete-queued", {"maxOutstandingRetrievals": 1}, hold="PENDING"),),
        after_submitted="ahead-of-delete-queued",
        during="a retrieval queued behind a held one (maxOutstandingRetrievals 1), deleted; "
        "then the held one is released",
    ),
    Case(
        "ahead-of-delete-queued",
        (request("ahead-of-delete-queued", ["dq-1"], project="delete-queued", type="Retrieval"),),
        Succeeds(("dq-1",)),
    ),
    Case(
        "delete-submitted",
        own("delete-submitted", ["ds-1"]),
        Deleted("Submitted", "cancelled", ("ds-1",)),
        projects=(Project("delete-submitted", hold="PENDING"),),
        during="deleted while its task is held PENDING at Mixpanel, then created again",
    ),
    Case(
        "delete-started",
        own("delete-started", ["dst-1"]),
        Deleted("InProgress", "completes", ("dst-1",)),
        projects=(Project("delete-started", hold="STARTED"),),
        during="deleted while its task is held STARTED; then released",
    ),
    Case(
        "delete-failed",
        own("delete-failed", ["df-1"]),
        Deleted("Failed", "no-more-tasks", ("df-1",)),
        projects=(Project("delete-failed", hold="FAILURE"),),
        during="every task of its project ends FAILURE at Mixpanel; deleted once Failed",
    ),
    Case(
        "delete-cancelled",
        own("delete-cancelled", ["dc-1"]),
        Deleted("Cancelled", "no-more-tasks", ("dc-1",)),
        projects=(Project("delete-cancelled", hold="REVOKED"),),
        during="its task is revoked at Mixpanel (outside the operator); deleted once Cancelled",
    ),
    Case(
        "delete-succeeded",
        (request("delete-succeeded", ["del-succ-1"]),),
        Deleted("Succeeded", "kept", ("del-succ-1",)),
        during="deleted once Succeeded",
    ),
]

MID_FLIGHT: list[Case] = [
    Case(
        "ids-secret-changed",
        (
            secret("ids-secret-changed-ids", "chg-1\nchg-2\n"),
            from_secret(
                "ids-secret-changed", "ids-secret-changed-ids", project="ids-secret-changed"
            ),
        ),
        Stalls("IdsChanged", ("create a new request",), phase="Submitted", ids=("chg-1", "chg-2")),
        projects=(Project("ids-secret-changed", hold="PENDING"),),
        during="the Secret is changed while the task is held; the operator restarts; then "
        "the task is released",
    ),
    Case(
        "ids-secret-deleted",
        (
            secret("ids-secret-deleted-ids", "gone-1\n"),
            from_secret(
                "ids-secret-deleted", "ids-secret-deleted-ids", project="ids-secret-deleted"
            ),
        ),
        Recovers(
            Stalls("IdsSecretNotFound", ("ids-secret-deleted-ids", "not found"), phase="Submitted"),
            ("gone-1",),
            within=150,
        ),
        projects=(Project("ids-secret-deleted", hold="PENDING"),),
        during="the Secret is deleted while the task is held; the operator restarts; the "
        "Secret is created again and the task released",
    ),
    Case(
        "token-secret-deleted",
        own("token-secret-deleted", ["tsd-1"]),
        Recovers(
            Stalls(
                "ProjectNotReady",
                ("token-secret-deleted-gdpr", "not found"),
                phase="Submitted",
                project_reason="SecretNotFound",
            ),
            ("tsd-1",),
            within=25,
            or_follows=True,
        ),
        projects=(Project("token-secret-deleted", hold="PENDING"),),
        during="the project's token Secret is deleted while its task is held; the task is "
        "released 7s later (past the 5s token cache); judged before the restart; "
        "the Secret is put back after it",
    ),
    Case(
        "project-token-edited",
        own("project-token-edited", ["pte-1"]),
        KeepsItsProject("spec.token", ("pte-1",)),
        projects=(Project("project-token-edited", hold="PENDING"),),
        during="the project's spec.token is changed to another Mixpanel project (same OAuth "
        "token) while its task is held; the task is released 3s later",
        bug=PROJECT_EDIT_BUG,
    ),
    Case(
        "project-deleted",
        own("project-deleted", ["pdel-1"]),
        Recovers(
            Stalls(
                "ProjectNotFound", ("MixpanelProject project-deleted not found",), phase="Submitted"
            ),
            ("pdel-1",),
        ),
        projects=(Project("project-deleted", hold="PENDING"),),
        during="the project is deleted while its task is held; then the task is released and "
        "the project created again",
    ),
]

CASES: list[Case] = [*REFUSED, *EDITS, *VALID, *STALLED, *DELETED, *MID_FLIGHT]

#: The ordinary requests that must keep finishing meanwhile.
NORMALS: list[Manifest] = [request(f"normal-{n:02d}", [f"normal-id-{n:02d}"]) for n in range(20)]

assert len({c.id for c in CASES}) == len(CASES)

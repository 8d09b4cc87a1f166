"""Manifests the API server must refuse, each with the field its message must name.

Shared by the end-to-end admission tests (the real API server refuses them)
and the unit tests (the pydantic models refuse the ones that are plain schema
violations, so the models and the CRDs cannot drift apart).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]


def dsr(**spec: Any) -> Manifest:
    base: dict[str, Any] = {
        "projectRef": {"name": "web"},
        "type": "Deletion",
        "distinctIds": ["u-1"],
    }
    base.update(spec)
    return {
        "apiVersion": "mixpaneldsr.io/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": "bad"},
        "spec": {k: v for k, v in base.items() if v is not DROP},
    }


def project(kind: str = "MixpanelProject", **spec: Any) -> Manifest:
    base: dict[str, Any] = {"token": "abc123", "credentialsSecretRef": {"name": "creds"}}
    base.update(spec)
    return {
        "apiVersion": "mixpaneldsr.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "bad"},
        "spec": {k: v for k, v in base.items() if v is not DROP},
    }


DROP: Any = object()


@dataclass(frozen=True)
class Case:
    id: str
    manifest: Manifest
    #: Every string must appear in the API server's message.
    expect: tuple[str, ...]
    #: A plain OpenAPI rule (not CEL): the pydantic model must refuse it too.
    schema_only: bool = True
    mutate: Callable[[Manifest], None] | None = field(default=None, compare=False)


def _no_spec(m: Manifest) -> None:
    del m["spec"]


CASES: list[Case] = [
    # ---- DataSubjectRequest
    Case(
        "dsr-no-ids",
        dsr(distinctIds=DROP),
        ("exactly one of spec.distinctIds or spec.distinctIdsFrom",),
        False,
    ),
    Case(
        "dsr-both-id-sources",
        dsr(distinctIdsFrom={"secretKeyRef": {"name": "ids", "key": "ids"}}),
        ("exactly one of spec.distinctIds or spec.distinctIdsFrom",),
        False,
    ),
    Case("dsr-empty-ids", dsr(distinctIds=[]), ("spec.distinctIds", "at least 1 item")),
    Case(
        "dsr-duplicate-ids",
        dsr(distinctIds=["u-1", "u-2", "u-1"]),
        ("spec.distinctIds[2]", "Duplicate value"),
        False,
    ),
    Case(
        "dsr-blank-id",
        dsr(distinctIds=["u-1", "   "]),
        ("spec.distinctIds[1]", "must not be blank"),
        False,
    ),
    Case("dsr-empty-string-id", dsr(distinctIds=[""]), ("spec.distinctIds[0]", "at least 1 chars")),
    Case(
        "dsr-id-too-long",
        dsr(distinctIds=["x" * 256]),
        ("spec.distinctIds[0]", "may not be more than 255"),
    ),
    Case(
        "dsr-too-many-inline-ids",
        dsr(distinctIds=[f"u{i}" for i in range(5001)]),
        ("spec.distinctIds", "at most 5000 ids", "distinctIdsFrom"),
        False,
    ),
    Case(
        "dsr-too-many-inline-id-bytes",
        dsr(distinctIds=[f"{i:03d}" + "x" * 250 for i in range(800)]),
        ("spec.distinctIds", "at most 200000 bytes", "Secret"),
        False,
    ),
    Case(
        "dsr-ids-not-a-list", dsr(distinctIds="u-1"), ("spec.distinctIds", "must be of type array")
    ),
    Case(
        "dsr-non-string-id",
        dsr(distinctIds=[123]),
        ("spec.distinctIds[0]", "must be of type string"),
    ),
    Case("dsr-missing-type", dsr(type=DROP), ("spec.type", "Required value")),
    Case("dsr-bad-type", dsr(type="Erase"), ("spec.type", "Unsupported value", "Deletion")),
    Case(
        "dsr-bad-compliance-type",
        dsr(complianceType="HIPAA"),
        ("spec.complianceType", "Unsupported value"),
    ),
    Case(
        "dsr-disclosure-on-gdpr-retrieval",
        dsr(type="Retrieval", disclosureType="Data"),
        ("spec.disclosureType", "only allowed for CCPA retrievals"),
        False,
    ),
    Case(
        "dsr-disclosure-on-ccpa-deletion",
        dsr(complianceType="CCPA", disclosureType="Data"),
        ("spec.disclosureType", "only allowed for CCPA retrievals"),
        False,
    ),
    Case(
        "dsr-bad-disclosure-type",
        dsr(type="Retrieval", complianceType="CCPA", disclosureType="Everything"),
        ("spec.disclosureType", "Unsupported value"),
    ),
    Case("dsr-missing-project-ref", dsr(projectRef=DROP), ("spec.projectRef", "Required value")),
    Case(
        "dsr-bad-project-name",
        dsr(projectRef={"name": "Web_Project"}),
        ("spec.projectRef.name", "should match"),
    ),
    Case(
        "dsr-bad-project-kind",
        dsr(projectRef={"name": "web", "kind": "Project"}),
        ("spec.projectRef.kind", "Unsupported value"),
    ),
    Case("dsr-bad-received-at", dsr(receivedAt="yesterday"), ("spec.receivedAt", "date-time")),
    Case(
        "dsr-negative-ttl",
        dsr(ttlSecondsAfterFinished=-1),
        ("spec.ttlSecondsAfterFinished", "greater than or equal to 0"),
    ),
    Case(
        "dsr-ids-secret-without-key",
        dsr(distinctIds=DROP, distinctIdsFrom={"secretKeyRef": {"name": "ids"}}),
        ("spec.distinctIdsFrom.secretKeyRef.key", "Required value"),
    ),
    Case("dsr-without-spec", dsr(), ("spec", "Required value"), mutate=_no_spec),
    # ---- MixpanelProject
    Case("mpp-bad-region", project(region="APAC"), ("spec.region", "Unsupported value", "EU")),
    Case("mpp-missing-token", project(token=DROP), ("spec.token", "Required value")),
    Case("mpp-token-with-spaces", project(token="abc def"), ("spec.token", "should match")),
    Case(
        "mpp-missing-credentials",
        project(credentialsSecretRef=DROP),
        ("spec.credentialsSecretRef", "Required value"),
    ),
    Case(
        "mpp-bad-secret-name",
        project(credentialsSecretRef={"name": "Creds!"}),
        ("spec.credentialsSecretRef.name", "should match"),
    ),
    Case(
        "mpp-id-limit-above-mixpanel",
        project(maxIdsPerRequest=2001),
        ("spec.maxIdsPerRequest", "less than or equal to 2000"),
    ),
    Case(
        "mpp-id-limit-zero",
        project(maxIdsPerRequest=0),
        ("spec.maxIdsPerRequest", "greater than or equal to 1"),
    ),
    Case(
        "mpp-request-interval-too-short",
        project(requestInterval="10ms"),
        ("spec.requestInterval", "between 100ms and 1h"),
        False,
    ),
    Case(
        "mpp-request-interval-not-duration",
        project(requestInterval="fast"),
        ("spec.requestInterval", "should match"),
    ),
    Case(
        "mpp-api-base-url-not-http",
        project(apiBaseURL="ftp://mirror.example.com/api"),
        ("spec.apiBaseURL", "absolute http or https URL"),
        False,
    ),
    Case(
        "mpp-bad-token-expiry",
        project(tokenExpiresAt="next year"),
        ("spec.tokenExpiresAt", "date-time"),
    ),
    Case(
        "mpp-no-outstanding-retrievals",
        project(maxOutstandingRetrievals=0),
        ("spec.maxOutstandingRetrievals", "greater than or equal to 1"),
    ),
    # ---- ClusterMixpanelProject
    Case(
        "cmpp-bad-region",
        project("ClusterMixpanelProject", region="us"),
        ("spec.region", "Unsupported value"),
    ),
    Case(
        "cmpp-missing-token",
        project("ClusterMixpanelProject", token=DROP),
        ("spec.token", "Required value"),
    ),
    # ---- from the hostile-input corpus (tests/hostile_cases.py)
    Case("dsr-null-id", dsr(distinctIds=[None]), ("spec.distinctIds[0]", "must be of type string")),
    Case(
        "dsr-nested-id-list",
        dsr(distinctIds=[["u-1"]]),
        ("spec.distinctIds[0]", "must be of type string"),
    ),
    Case(
        "dsr-ids-empty-object", dsr(distinctIds={}), ("spec.distinctIds", "must be of type array")
    ),
    Case(
        "dsr-id-too-long-in-characters",
        dsr(distinctIds=["\U0001f642" * 256]),
        ("spec.distinctIds[0]", "may not be more than 255"),
    ),
    Case(
        "dsr-unicode-blank-id",
        dsr(distinctIds=["u-1", "\u3000"]),
        ("spec.distinctIds[1]", "must not be blank"),
        False,
    ),
    Case("dsr-lowercase-type", dsr(type="deletion"), ("spec.type", "Unsupported value")),
    Case("mpp-lowercase-region", project(region="eu"), ("spec.region", "Unsupported value")),
    Case(
        "mpp-request-interval-in-us-too-short",
        project(requestInterval="99999us"),
        ("spec.requestInterval", "between 100ms and 1h"),
        False,
    ),
    Case(
        "mpp-api-base-url-relative",
        project(apiBaseURL="/api/app"),
        ("spec.apiBaseURL", "absolute http or https URL"),
        False,
    ),
]


def manifest_of(case: Case) -> Manifest:
    manifest = copy.deepcopy(case.manifest)
    if case.mutate:
        case.mutate(manifest)
    return manifest

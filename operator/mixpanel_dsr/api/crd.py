"""Generate the CustomResourceDefinitions in ``crds/`` from the pydantic models.

``python -m mixpanel_dsr.api.generate --out crds`` rewrites them (and docs/api.md); a test
checks that the committed files equal what this module generates, so the schema the API
server enforces and the models the operator parses are one thing.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from mixpanel_dsr.api import GROUP, VERSION
from mixpanel_dsr.api.models import (
    ClusterMixpanelProject,
    DataSubjectRequest,
    DataSubjectRequestReceipt,
    MixpanelProject,
    MixpanelTask,
)

Schema = dict[str, Any]

#: JSON-schema keys that have no place (or no meaning) in a structural schema.
_DROPPED_KEYS = {"title", "additionalProperties", "$defs"}


def structural_schema(model: type[BaseModel]) -> Schema:
    """The model's JSON schema rewritten as a Kubernetes structural schema.

    Inlines ``$ref``s, turns ``Optional[X]`` into a non-required ``X``, merges
    unions of string enums, turns ``const`` into a one-value enum and drops
    ``null`` defaults and titles. Keys the models add through
    ``json_schema_extra`` (``x-kubernetes-*``) pass through unchanged.
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Schema] = raw.get("$defs", {})
    return _convert(raw, defs)


def _convert(node: Schema, defs: dict[str, Schema]) -> Schema:
    node = copy.deepcopy(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        merged = _convert(target, defs)
        merged.update({k: v for k, v in node.items() if k not in _DROPPED_KEYS})
        node = merged
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        converted = [_convert(o, defs) for o in options]
        if len(converted) == 1:
            base = converted[0]
        elif all("enum" in o and o.get("type") == "string" for o in converted):
            values: list[str] = []
            for option in converted:
                values += [v for v in option["enum"] if v not in values]
            base = {"type": "string", "enum": values}
        else:
            raise ValueError(f"union cannot be made structural: {options}")
        for key, value in base.items():
            node.setdefault(key, value)
    if "const" in node:
        node["enum"] = [node.pop("const")]
        node.setdefault("type", "string")
    if "description" in node:
        node["description"] = " ".join(node["description"].split())
    if "default" in node and node["default"] is None:
        del node["default"]
    extra = node.get("additionalProperties")
    for key in _DROPPED_KEYS:
        node.pop(key, None)
    if isinstance(extra, dict):  # a map (dict[str, X]); `false` is dropped as meaningless
        node["additionalProperties"] = _convert(extra, defs)
    if "properties" in node:
        node["properties"] = {
            name: _convert(prop, defs) for name, prop in node["properties"].items()
        }
    if "items" in node:
        node["items"] = _convert(node["items"], defs)
    return node


def _root_schema(model: type[BaseModel]) -> Schema:
    schema = structural_schema(model)
    description = schema.pop("description", None)
    properties = schema["properties"]
    if "status" in properties:
        properties["status"].setdefault("description", "Observed state, written by the operator.")
    properties["spec"].setdefault("description", "Desired state.")
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this representation of an object.",
            },
            "kind": {"type": "string", "description": "REST resource this object represents."},
            "metadata": {"type": "object"},
            **properties,
        },
    }


def _column(name: str, path: str, kind: str = "string", **extra: Any) -> Schema:
    return {"name": name, "type": kind, "jsonPath": path, **extra}


_PROJECT_COLUMNS = [
    _column("Region", ".spec.region"),
    _column("Ready", '.status.conditions[?(@.type=="Ready")].status'),
    _column("Reason", '.status.conditions[?(@.type=="Ready")].reason'),
    # A time as written (a `date` column prints any future time as <invalid>).
    _column("Token Expires", ".status.tokenExpiresAt"),
    _column("Age", ".metadata.creationTimestamp", "date"),
]

_DSR_COLUMNS = [
    _column("Type", ".spec.type"),
    _column("Project", ".spec.projectRef.name"),
    _column("Phase", ".status.phase"),
    _column("Done", ".status.progress", description="Ids done/total"),
    _column("Deadline", ".status.deadline"),
    _column("Age", ".metadata.creationTimestamp", "date"),
    _column("Compliance", ".spec.complianceType", priority=1),
    _column("Ready", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
]


_TASK_COLUMNS = [
    _column("Project", ".spec.projectRef.name"),
    _column("Type", ".spec.type"),
    _column("Phase", ".status.phase"),
    _column("Mixpanel", ".status.mixpanelState", description="Mixpanel's last reported state"),
    _column("Ids", ".spec.idCount", "integer"),
    _column("Requests", ".spec.members[*].name", priority=1),
    _column("Tracking Id", ".status.trackingId"),
    _column("Age", ".metadata.creationTimestamp", "date"),
]


_RECEIPT_COLUMNS = [
    _column("Request", ".spec.request.name"),
    _column("Type", ".spec.type"),
    _column("Project", ".spec.project.name"),
    _column("Outcome", ".spec.outcome"),
    _column("Ids", ".spec.idCount", "integer"),
    _column("Completed", ".spec.completedAt"),
    _column("Deadline Met", ".spec.deadlineMet", "boolean"),
    _column("Part", ".spec.part", "integer", priority=1),
    _column("Retain Until", ".spec.retainUntil", priority=1),
]


def _crd(
    model: type[BaseModel],
    *,
    kind: str,
    plural: str,
    short: str,
    scope: str,
    columns: list[Schema],
    status: bool = True,
    categories: tuple[str, ...] = ("privacy",),
    selectable: tuple[str, ...] = (),
) -> Schema:
    version: Schema = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": columns,
        "schema": {"openAPIV3Schema": _root_schema(model)},
    }
    if selectable:
        version["selectableFields"] = [{"jsonPath": path} for path in selectable]
    if not status:
        del version["subresources"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "mixpanel-dsr-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                **({"categories": list(categories)} if categories else {}),
            },
            "versions": [version],
        },
    }


def all_crds() -> dict[str, Schema]:
    """File name -> CRD manifest, for every resource the operator serves."""
    return {
        "datasubjectrequests.yaml": _crd(
            DataSubjectRequest,
            kind="DataSubjectRequest",
            plural="datasubjectrequests",
            short="dsr",
            scope="Namespaced",
            columns=_DSR_COLUMNS,
            # The operator watches only unsettled requests (a field selector on the phase),
            # and `kubectl get dsr --field-selector status.phase=Failed` works for people.
            selectable=(".status.phase",),
        ),
        "mixpanelprojects.yaml": _crd(
            MixpanelProject,
            kind="MixpanelProject",
            plural="mixpanelprojects",
            short="mpp",
            scope="Namespaced",
            columns=_PROJECT_COLUMNS,
        ),
        "clustermixpanelprojects.yaml": _crd(
            ClusterMixpanelProject,
            kind="ClusterMixpanelProject",
            plural="clustermixpanelprojects",
            short="cmpp",
            scope="Cluster",
            columns=_PROJECT_COLUMNS,
        ),
        "mixpaneltasks.yaml": _crd(
            MixpanelTask,
            kind="MixpanelTask",
            plural="mixpaneltasks",
            short="mpt",
            scope="Namespaced",
            columns=_TASK_COLUMNS,
        ),
        "datasubjectrequestreceipts.yaml": _crd(
            DataSubjectRequestReceipt,
            kind="DataSubjectRequestReceipt",
            plural="datasubjectrequestreceipts",
            short="dsrr",
            scope="Namespaced",
            columns=_RECEIPT_COLUMNS,
            status=False,
            # Kept for years: not in `kubectl get privacy`, which shows the work in hand.
            categories=(),
        ),
    }


HEADER = (
    "# Generated by `make crds` (python -m mixpanel_dsr.api.generate) from\n"
    "# operator/mixpanel_dsr/api/models.py. Do not edit by hand.\n"
)


def render(crd: Schema) -> str:
    """A CRD as the YAML text committed in crds/."""
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)

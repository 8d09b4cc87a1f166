"""The pydantic models and the CRDs are one thing: generated, described, and refusing alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from mixpanel_dsr.api import crd, generate
from mixpanel_dsr.api.models import (
    ClusterMixpanelProject,
    DataSubjectRequest,
    MixpanelProject,
    RequestType,
)
from mixpanel_dsr.mixpanel.types import ComplianceType, Region
from tests.admission_cases import CASES, Case, dsr, manifest_of
from tests.conftest import CRDS, EXAMPLES

MODELS: dict[str, type[BaseModel]] = {
    "DataSubjectRequest": DataSubjectRequest,
    "MixpanelProject": MixpanelProject,
    "ClusterMixpanelProject": ClusterMixpanelProject,
}


def test_committed_crds_are_generated_from_the_models(tmp_path: Path) -> None:
    docs = CRDS.parent / "docs" / "api.md"
    assert generate.main(["--out", str(CRDS), "--docs", str(docs), "--check"]) == 0, (
        "run `make crds`"
    )
    # Beside the generated CRDs, only the hand-written approval admission policy.
    extra = {"approval-policy.yaml", "approval-policy-binding.yaml"}
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted({*crd.all_crds(), *extra})


def _walk(schema: dict[str, Any], path: str) -> list[str]:
    missing = []
    for name, prop in schema.get("properties", {}).items():
        where = f"{path}.{name}"
        if name not in ("apiVersion", "kind", "metadata") and not prop.get("description"):
            missing.append(where)
        missing += _walk(prop, where)
    if "items" in schema:
        missing += _walk(schema["items"], path + "[]")
    return missing


@pytest.mark.parametrize("name", sorted(crd.all_crds()))
def test_every_field_has_a_description(name: str) -> None:
    schema = crd.all_crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema, "") == []


@pytest.mark.parametrize("name", sorted(crd.all_crds()))
def test_schemas_are_structural(name: str) -> None:
    """No construct the API server refuses in a structural schema."""
    text = yaml.safe_dump(crd.all_crds()[name])
    for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title:", "const:"):
        assert forbidden not in text

    def maps_are_maps(node: object) -> None:
        # additionalProperties only as a map's value schema, never a bool, never with properties.
        if isinstance(node, dict):
            if "additionalProperties" in node:
                assert isinstance(node["additionalProperties"], dict)
                assert "properties" not in node
            for value in node.values():
                maps_are_maps(value)
        elif isinstance(node, list):
            for value in node:
                maps_are_maps(value)

    maps_are_maps(crd.all_crds()[name])


def _example_objects() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") in MODELS]
    return docs


def test_every_example_parses_into_the_models() -> None:
    objects = _example_objects()
    assert {o["kind"] for o in objects} == set(MODELS)
    for obj in objects:
        MODELS[obj["kind"]].model_validate(obj)


def test_defaults_match_what_the_api_server_applies() -> None:
    parsed = DataSubjectRequest.model_validate(dsr(type="Deletion"))
    assert parsed.spec.compliance_type is ComplianceType.GDPR
    assert parsed.spec.type is RequestType.DELETION
    assert parsed.spec.dry_run is False
    assert parsed.spec.project_ref.kind == "MixpanelProject"
    wire = MixpanelProject.model_validate(
        {"spec": {"token": "t", "credentialsSecretRef": {"name": "s"}}}
    ).spec.to_wire()
    schema = crd.all_crds()["mixpanelprojects.yaml"]["spec"]["versions"][0]["schema"]
    spec_schema = schema["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for field, value in wire.items():
        if "default" in spec_schema[field]:
            assert spec_schema[field]["default"] == value, field
    assert wire["region"] == Region.US
    assert spec_schema["credentialsSecretRef"]["properties"]["key"]["default"] == "token"


@pytest.mark.parametrize("case", [c for c in CASES if c.schema_only], ids=lambda c: c.id)
def test_models_refuse_what_the_schema_refuses(case: Case) -> None:
    manifest = manifest_of(case)
    with pytest.raises(ValidationError):
        MODELS[manifest["kind"]].model_validate(manifest)

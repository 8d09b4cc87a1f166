"""The cached Go builder: cache keys follow the pinned versions and the module's files."""

from __future__ import annotations

import shutil
from pathlib import Path

from mixpanel_dsr.localcluster import build


def _copy(module: Path, tmp_path: Path) -> Path:
    dest = tmp_path / module.name
    shutil.copytree(module, dest)
    return dest


def test_controlplane_key_names_versions_then_digest() -> None:
    key = build.cache_key()
    k8s, etcd = build.pinned_versions()
    assert key.startswith(f"k8s-{k8s}_etcd-{etcd}_")
    assert len(key.rsplit("_", 1)[1]) == 12


def test_tools_key_names_helm_and_cli_utils() -> None:
    key = build.tools_build().key()
    versions = build.tools_build().versions()
    assert versions["helm"].startswith("v3.")
    assert key.startswith(f"helm-{versions['helm']}_cli-utils-{versions['cli-utils']}_")


def test_key_changes_with_go_sum_and_sources(tmp_path: Path) -> None:
    module = _copy(build.TOOLS_MODULE_DIR, tmp_path)
    spec = build.tools_build(module)
    before = spec.key()
    (module / "cmd/kstatus/main.go").write_text("package main\n")
    after_source = spec.key()
    (module / "go.sum").write_text("")
    after_sum = spec.key()
    assert len({before, after_source, after_sum}) == 3


def test_helm_ldflags_stamp_version_and_kubernetes_minor() -> None:
    spec = build.tools_build()
    flags = spec.ldflags(spec.versions())
    assert f"internal/version.version={spec.versions()['helm']}" in flags
    minor = spec.versions()["client-go"].split(".")[1]
    assert f"pkg/chartutil.k8sVersionMinor={minor}" in flags


def test_ensure_reuses_a_finished_build(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MIXPANEL_DSR_CACHE", str(tmp_path / "cache"))
    spec = build.tools_build()
    spec.target().mkdir(parents=True)
    monkeypatch.setattr(build.shutil, "which", lambda _name: None)  # a build would fail
    assert spec.ensure(log=False) == spec.target()

"""``kubectl dsr intake`` end to end: the installed ``kubectl-dsr`` reads a ticket system's CSV
export, and what it writes (files for Git, or objects it creates) is carried out by the real
operator against the Mixpanel sandbox, on a real kube-apiserver. No id may appear in any
request manifest, in the requests' stored objects, or in anything the plugin prints."""

from __future__ import annotations

import base64
import csv
import fcntl
import io
import json
import os
import random
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mixpanel_dsr.localcluster import ControlPlane
from mixpanel_dsr.localcluster.build import cache_root
from tests.conftest import Kube
from tests.e2e.conftest import Scenario
from tests.e2e.test_plugin import Plugin

pytestmark = pytest.mark.e2e

DSR_KIND = "datasubjectrequest.mixpaneldsr.io"

HEADER = ["Ticket", "Request Type", "Compliance", "Distinct ID(s)", "Received Date", "Email"]

#: The tools a user runs on intake's files, built from the Go module proxy on first use
#: (``go install``, checked against the Go checksum database) and cached per machine.
GO_TOOLS = {
    "kubeseal": ("github.com/bitnami-labs/sealed-secrets/cmd/kubeseal", "v0.27.1"),
    "sops": ("github.com/getsops/sops/v3/cmd/sops", "v3.13.3"),
    "age-keygen": ("filippo.io/age/cmd/age-keygen", "v1.3.2"),
}


def go_tool(name: str) -> Path:
    """The cached binary of one of :data:`GO_TOOLS` (a first build takes minutes)."""
    package, version = GO_TOOLS[name]
    folder = cache_root() / "intake-tools" / f"{name}-{version}"
    binary = folder / name
    if binary.exists():
        return binary
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            env = {**os.environ, "GOBIN": str(folder / "tmp"), "GOFLAGS": "-buildvcs=false"}
            subprocess.run(
                ["go", "install", f"{package}@{version}"],
                env=env, check=True, capture_output=True, timeout=1800,
            )  # fmt: skip
            (folder / "tmp" / name).rename(binary)
            (folder / "tmp").rmdir()
    return binary


@pytest.fixture
def plugin(control_plane: ControlPlane) -> Plugin:
    return Plugin(control_plane)


def export(rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # as spreadsheets export it
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue()


def thousand_rows(seed: int) -> tuple[list[list[str]], dict[str, tuple[str, list[str]]]]:
    """1,000 rows of a realistic export: most tickets one row per id (rows of a ticket
    scattered), some with several ids in one cell, a few CCPA, a few retrievals; an Email
    column that intake must not read. Returns the rows and, per ticket, (type, ids)."""
    rng = random.Random(seed)  # noqa: S311 (test data)
    today = datetime.now(UTC).date()
    rows: list[list[str]] = []
    tickets: dict[str, tuple[str, list[str]]] = {}
    n = 0
    while len(rows) < 1000:
        n += 1
        ticket = f"PRIV-{7000 + n}"
        retrieval = n % 40 == 0
        kind = "access" if retrieval else rng.choice(["erase", "Deletion", "delete"])
        law = "CCPA" if n % 7 == 0 else "GDPR"
        received = (today - timedelta(days=rng.randrange(0, 20))).isoformat()
        count = 1 if retrieval else min(rng.choice([1, 1, 2, 3, 5]), 1000 - len(rows))
        ids = [f"{rng.choice(['u', 'dev', 'mail'])}-{uuid.UUID(int=rng.getrandbits(128))}"
               for _ in range(count)]  # fmt: skip
        ids = [f"{i}@example.com" if i.startswith("mail") else i for i in ids]
        tickets[ticket] = ("Retrieval" if retrieval else "Deletion", ids)
        email = f"person{n}@example.org"
        if count > 1 and n % 3 == 0:
            rows.append([ticket, kind, law, ";".join(ids), received, email])
        else:
            rows += [[ticket, kind, law, i, received, email] for i in ids]
    rng.shuffle(rows)
    return rows, tickets


def no_id_in(text: str, ids: list[str]) -> list[str]:
    return [i for i in ids if i in text]


def test_a_thousand_row_export_becomes_git_files_the_operator_carries_out(
    scenario: Scenario, kube: Kube, plugin: Plugin, tmp_path: Path
) -> None:
    ns = scenario.namespace
    token = scenario.project(requestInterval="100ms")
    rows, tickets = thousand_rows(seed=11)
    assert len(rows) == 1000
    all_ids = [i for _, ids in tickets.values() for i in ids]
    assert len(set(all_ids)) == len(all_ids) > 1000  # some cells list several ids
    export_file = tmp_path / "tickets-2026-11.csv"
    export_file.write_text(export(rows), encoding="utf-8")
    base = ["intake", str(export_file), "-n", ns, "--project", "proj"]

    planned = plugin(*base, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    lines = planned.stdout.splitlines()
    n = len(tickets)
    assert lines[0] == f"1000 rows, {n} tickets: {n} requests with {len(all_ids)} distinct ids"
    assert lines[1].startswith(f"would create in namespace {ns}: {n} secrets, {n} datasubject")
    assert planned.stderr == "columns not read: Email\n"
    assert not no_id_in(planned.stdout + planned.stderr, all_ids)

    out = tmp_path / "privacy-repo" / "requests-2026-11"
    written = plugin(*base, "--dir", str(out), "--secret-format", "sops", "--sops-age", "age1test")
    assert written.returncode == 0, written.stderr
    assert "sops --encrypt" in written.stdout
    assert not no_id_in(written.stdout + written.stderr, all_ids)
    request_files = sorted((out / "requests").iterdir())
    assert len(request_files) == len(tickets)
    manifests = "".join(p.read_text() for p in request_files)
    assert not no_id_in(manifests, all_ids), "a distinct id is in a request manifest"
    plain = sorted((out / "unsealed").glob("*.yaml"))
    assert len(plain) == len(tickets)
    assert (out / "unsealed" / ".gitignore").read_text().splitlines()[-1] == "*"

    # sops encrypts unsealed/ into secrets/ and Flux decrypts them on apply: the cluster
    # gets the same plain Secrets, then the requests, applied here with real kubectl.
    kube.run("apply", "--server-side", "-f", str(out / "unsealed"))
    kube.run("apply", "--server-side", "-f", str(out / "requests"))

    waited = plugin("wait", "-n", ns, "--timeout", "8m", timeout=560)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert waited.stderr.splitlines()[-1] == f"{len(tickets)}/{len(tickets)} finished, 0 failed"

    stored = json.loads(kube.run("get", "dsr", "-n", ns, "-o", "json").stdout)["items"]
    by_ticket = {o["metadata"]["annotations"]["mixpaneldsr.io/ticket"]: o for o in stored}
    assert sorted(by_ticket) == sorted(tickets)
    for ticket, (kind, ids) in tickets.items():
        obj = by_ticket[ticket]
        assert obj["metadata"]["labels"]["mixpaneldsr.io/ticket"] == ticket
        assert obj["spec"]["type"] == kind
        assert obj["status"]["phase"] == "Succeeded"
        assert obj["status"]["idsTotal"] == len(ids)
    assert not no_id_in(json.dumps(stored), all_ids), "a distinct id is in a stored request"

    seen = scenario.sandbox.ids(token)
    for kind, ids in tickets.values():
        for i in ids:
            done = "deletions_succeeded" if kind == "Deletion" else "retrievals_succeeded"
            assert seen[i][done] >= 1, (kind, seen[i])
    assert sorted(seen) == sorted(all_ids)


def test_intake_creates_secrets_first_and_refuses_bad_files_whole(
    scenario: Scenario, kube: Kube, plugin: Plugin, tmp_path: Path
) -> None:
    ns = scenario.namespace
    scenario.project(requestInterval="100ms")
    day = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()

    def objects() -> list[str]:
        out = kube.run("get", "dsr,secret", "-n", ns, "-l", "mixpaneldsr.io/intake", "-o", "name")
        return out.stdout.split()

    b1, b2 = ["P-1", "erase", "GDPR", "b-1", day, ""], ["P-1", "erase", "CCPA", "b-2", day, ""]
    bad_files = {
        "type": ([b1, ["P-2", "wipe", "GDPR", "b-2", day, ""]],
                 "row 3, column 'Request Type': not a request type"),
        "date": ([["P-1", "erase", "GDPR", "b-1", "30/11/2026", ""]],
                 "row 2, column 'Received Date': not a date"),
        "ids": ([["P-1", "erase", "GDPR", " ; ", day, ""]],
                "row 2, column 'Distinct ID(s)': no distinct ids"),
        "conflict": ([b1, b2],
                     "row 3, column 'Compliance': ticket 'P-1' has another compliance type"),
        "too many": ([["P-1", "erase", "GDPR", ";".join(f"b-{n}" for n in range(6)), day, ""]],
                     "row 2, column 'Distinct ID(s)': ticket 'P-1' lists 6 distinct ids, more "
                     "than 5 (--max-ids)"),
    }  # fmt: skip
    for case, (rows, message) in bad_files.items():
        path = tmp_path / f"{case.replace(' ', '-')}.csv"
        path.write_text(export(rows))
        refused = plugin("intake", str(path), "-n", ns, "--project", "proj", "--max-ids", "5")
        assert refused.returncode == 1, (case, refused.stdout)
        note, first, *problems = refused.stderr.splitlines()
        assert note == "columns not read: Email"
        assert first.startswith(f"error: {path}: "), first
        assert first.endswith("nothing was written or created (--skip-invalid leaves them out):")
        assert [p for p in problems if p.startswith(f"  {message}")], refused.stderr
        assert "b-1" not in refused.stderr
        assert objects() == [], case

    # One Secret for the file, with a key per request, created before the requests.
    rows = [[f"P-{n // 2}", "erase", "GDPR", f"g-{n}", day, ""] for n in range(40)]
    good = tmp_path / "good.csv"
    good.write_text(export(rows))
    batch = ["intake", str(good), "-n", ns, "--project", "proj", "--secrets", "per-batch"]
    made = plugin(*batch)
    assert made.returncode == 0, made.stderr
    printed = made.stdout.splitlines()
    assert printed[0] == "secret/good-ids created"
    assert printed[1:] == [
        f"datasubjectrequest.mixpaneldsr.io/p-{n}-erase created" for n in range(20)
    ]
    assert made.stderr.splitlines()[-1] == f"created 20 requests and 1 secret in namespace {ns}"
    secret = kube.get("secret", "good-ids", ns)
    assert sorted(secret["data"]) == sorted(f"p-{n}-erase" for n in range(20))
    uids = {kube.get("dsr", f"p-{n}-erase", ns)["metadata"]["uid"] for n in range(20)}
    assert {o["uid"] for o in secret["metadata"]["ownerReferences"]} == uids
    assert not no_id_in(made.stdout + made.stderr, [r[3] for r in rows])

    again = plugin(*batch)
    assert again.returncode == 1
    assert "20 of these requests exist already" in again.stderr
    resumed = plugin(*batch, "--skip-existing")
    assert resumed.returncode == 0, resumed.stderr
    assert "nothing to create" in resumed.stderr

    # A later file for the same batch adds its new request's key; the ids of a request that
    # exists already stay as they were accepted, whatever the new file says.
    secret_before = kube.get("secret", "good-ids", ns)["data"]
    later = tmp_path / "later.csv"
    later.write_text(export([["P-0", "erase", "GDPR", "changed-id", day, ""],
                             ["P-20", "erase", "GDPR", "g-40", day, ""]]))  # fmt: skip
    added = plugin("intake", str(later), "-n", ns, "--project", "proj", "--secrets", "per-batch",
                   "--batch", "good", "--skip-existing")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == [
        "secret/good-ids updated",
        f"{DSR_KIND}/p-20-erase created",
    ]
    secret = kube.get("secret", "good-ids", ns)
    assert secret["data"] == {**secret_before, "p-20-erase": base64.b64encode(b"g-40\n").decode()}
    assert len(secret["metadata"]["ownerReferences"]) == 21

    # --skip-invalid: the good tickets of a file with bad rows, each with its own Secret.
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(
        export(
            [
                ["Q-1", "erase", "GDPR", "m-1;m-2", day, ""],
                ["Q-2", "erase", "HIPAA", "m-3", day, ""],
                ["Q-3", "access", "CCPA", "m-4", day, ""],
            ]
        )
    )
    partial = plugin("intake", str(mixed), "-n", ns, "--project", "proj", "--skip-invalid")
    assert partial.returncode == 0, partial.stderr
    assert partial.stdout.splitlines() == [
        "secret/q-1-erase-ids created",
        "datasubjectrequest.mixpaneldsr.io/q-1-erase created",
        "secret/q-3-access-ids created",
        "datasubjectrequest.mixpaneldsr.io/q-3-access created",
    ]
    assert "warning: row 3, column 'Compliance': not a compliance type" in partial.stderr
    assert "1 row refused (1 ticket)" in partial.stderr
    for name in ("q-1-erase", "q-3-access"):
        [owner] = kube.get("secret", f"{name}-ids", ns)["metadata"]["ownerReferences"]
        assert owner["uid"] == kube.get("dsr", name, ns)["metadata"]["uid"]

    waited = plugin("wait", "-n", ns, "--timeout", "4m", timeout=300)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert waited.stderr.splitlines()[-1] == "23/23 finished, 0 failed"


def sealing_key(folder: Path) -> tuple[Path, Path]:
    """An RSA key and its self-signed certificate, as the Sealed Secrets controller makes."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealed-secret")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = folder / "sealing.key", folder / "sealing.crt"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file


def small_export(prefix: str, day: str) -> tuple[str, list[str], list[str]]:
    """Four tickets, eight rows, one cell with two ids: (CSV, request names, ids)."""
    rows = []
    ids: list[str] = []
    for n in range(4):
        mine = [f"{prefix}-{n}-{k}@example.com" for k in range(3)]
        ids += mine
        rows.append([f"{prefix.upper()}-{n}", "erase", "GDPR", ";".join(mine[:2]), day, ""])
        rows.append([f"{prefix.upper()}-{n}", "erase", "GDPR", mine[2], day, ""])
    return export(rows), [f"{prefix}-{n}-erase" for n in range(4)], ids


def printed_command(stdout: str) -> str:
    [command] = [line.strip() for line in stdout.splitlines() if line.startswith("  (set -e;")]
    return command


def test_the_printed_kubeseal_and_sops_commands_work_with_the_real_tools(
    scenario: Scenario, kube: Kube, plugin: Plugin, tmp_path: Path
) -> None:
    """What intake prints for SealedSecrets and SOPS, run as printed with real kubeseal and
    sops: Git gets only ciphertext, and what the cluster decrypts is what the operator needs."""
    ns = scenario.namespace
    token = scenario.project(requestInterval="100ms")
    tools = {name: go_tool(name) for name in GO_TOOLS}
    path = os.pathsep.join([str(tools["kubeseal"].parent), str(tools["sops"].parent),
                            os.environ.get("PATH", "")])  # fmt: skip
    day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    repo = tmp_path / "privacy-repo"
    repo.mkdir()
    all_ids: list[str] = []

    # SealedSecrets: seal with the controller's certificate (SEALED_SECRETS_CERT is kubeseal's
    # --cert), then unseal as the controller does, with kubeseal's own recovery mode.
    text, names, ids = small_export("seal", day)
    all_ids += ids
    (tmp_path / "seal.csv").write_text(text)
    out = repo / "sealed"
    made = plugin("intake", str(tmp_path / "seal.csv"), "-n", ns, "--project", "proj",
                  "--dir", str(out), "--secret-format", "sealedsecrets")  # fmt: skip
    assert made.returncode == 0, made.stderr
    key, cert = sealing_key(tmp_path)
    env = {**os.environ, "PATH": path, "SEALED_SECRETS_CERT": str(cert)}
    run = subprocess.run(["bash", "-c", printed_command(made.stdout)], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert not (out / "unsealed").exists()
    sealed = sorted((out / "secrets").iterdir())
    assert [p.name for p in sealed] == [f"{n}-ids.yaml" for n in names]
    committed = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert not no_id_in(committed, ids), "a distinct id is in a file meant for Git"
    for file in sealed:
        doc = yaml.safe_load(file.read_text())
        assert doc["kind"] == "SealedSecret"
        assert (doc["metadata"]["name"], doc["metadata"]["namespace"]) == (file.stem, ns)
        assert list(doc["spec"]["encryptedData"]) == ["ids"]
        unsealed = subprocess.run(
            [str(tools["kubeseal"]), "--recovery-unseal", "--recovery-private-key", str(key)],
            input=file.read_text(), capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        secret = json.loads(unsealed.stdout)
        secret["metadata"].pop("ownerReferences")  # the controller's, to its SealedSecret
        kube.apply(secret)
    kube.run("apply", "-f", str(out / "requests"))

    # SOPS: the printed .sops.yaml rule at the repository's root, the printed command run
    # there; then decrypted with the age key, as Flux does.
    age_key = tmp_path / "age.key"
    subprocess.run([str(tools["age-keygen"]), "-o", str(age_key)], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    found = re.search(r"# public key: (age1\S+)", age_key.read_text())
    assert found
    text, names, ids = small_export("sops", day)
    all_ids += ids
    (tmp_path / "sops.csv").write_text(text)
    out = repo / "sops"
    recipient = found.group(1)
    sops_args = ["--dir", str(out), "--secret-format", "sops", "--sops-age", recipient]
    made = plugin("intake", str(tmp_path / "sops.csv"), "-n", ns, "--project", "proj", *sops_args)
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("Suggested .sops.yaml"))
    end = next(n for n, line in enumerate(lines) if line.startswith("Encrypt the Secrets"))
    (repo / ".sops.yaml").write_text("\n".join(line[2:] for line in lines[start + 1 : end]) + "\n")
    env = {**os.environ, "PATH": path}
    run = subprocess.run(["bash", "-c", printed_command(made.stdout)], env=env, cwd=repo,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert not (out / "unsealed").exists()
    encrypted = sorted((out / "secrets").iterdir())
    assert [p.name for p in encrypted] == [f"{n}-ids.yaml" for n in names]
    committed = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert not no_id_in(committed, ids), "a distinct id is in a file meant for Git"
    for file in encrypted:
        doc = yaml.safe_load(file.read_text())
        assert doc["metadata"]["name"] == file.stem  # only data is encrypted
        assert doc["data"]["ids"].startswith("ENC[AES256_GCM,")
        assert doc["sops"]["age"][0]["recipient"] == recipient
        decrypted = subprocess.run(
            [str(tools["sops"]), "--decrypt", str(file)],
            env={**os.environ, "SOPS_AGE_KEY_FILE": str(age_key)},
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        secret = yaml.safe_load(decrypted.stdout)
        listed = base64.b64decode(secret["data"]["ids"]).decode().split()
        assert set(listed) <= set(ids)
        kube.apply(secret)
    kube.run("apply", "-f", str(out / "requests"))

    waited = plugin("wait", "-n", ns, "--timeout", "4m", timeout=300)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert waited.stderr.splitlines()[-1] == "8/8 finished, 0 failed"
    seen = scenario.sandbox.ids(token)
    assert sorted(seen) == sorted(all_ids)
    assert all(entry["deletions_succeeded"] >= 1 for entry in seen.values())

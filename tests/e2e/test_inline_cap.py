"""The inline id cap is one that the ways users apply actually accept.

The CRD caps ``spec.distinctIds`` at ``MAX_INLINE_IDS`` ids and ``MAX_INLINE_ID_BYTES``
bytes of ids in all, set from measurement on this control plane (kube-apiserver 1.36,
etcd 3.6):

* ``kubectl apply`` (client-side) copies the whole manifest into the
  ``kubectl.kubernetes.io/last-applied-configuration`` annotation, and all of an
  object's annotations together may hold at most 262144 bytes: 1015 ids of 255
  characters (258,825 bytes of ids) is the most it can apply;
* ``kubectl apply --server-side`` lists every id again in ``metadata.managedFields``,
  and the stored object must stay under etcd's 1.5 MiB request limit: 2994 ids of 255
  characters (763,470 bytes of ids).

At the cap a client-side applied request (the tighter of the two) keeps about 45 KiB of
annotation room for the name, labels and other tools' annotations. Longer lists go in a
Secret (``spec.distinctIdsFrom``), which holds up to 1 MiB: 100,000 short ids.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import pytest

from mixpanel_dsr.api.models import MAX_ID_LENGTH, MAX_INLINE_ID_BYTES, MAX_INLINE_IDS
from tests.conftest import Kube
from tests.e2e.conftest import Scenario
from tests.e2e.operator_harness import wait_until

pytestmark = pytest.mark.e2e

#: The Kubernetes limit on all of one object's annotations (kubectl's last-applied copy).
ANNOTATIONS_LIMIT = 262_144
#: The API server's limit on a Secret's data.
SECRET_LIMIT = 1024 * 1024
#: How many ids the Secret-sourced request lists.
SECRET_IDS = 100_000
#: How long a request at the cap may take to finish against the sandbox.
TIMEOUT = 180


def padded(n: int, length: int, fill: str = "u") -> str:
    """A distinct id of exactly ``length`` characters, unique for each ``n``."""
    digits = str(n)
    assert len(digits) <= length
    return fill * (length - len(digits)) + digits


def ids_at_count_and_byte_cap() -> list[str]:
    """``MAX_INLINE_IDS`` ids totalling exactly ``MAX_INLINE_ID_BYTES`` bytes.

    Both caps at once is the worst case for client-side apply: every id costs its
    length plus three bytes (quotes and comma) in the last-applied annotation.
    """
    base, longer = divmod(MAX_INLINE_ID_BYTES, MAX_INLINE_IDS)
    assert len(str(MAX_INLINE_IDS)) <= base < MAX_ID_LENGTH
    return [padded(n, base + (n < longer)) for n in range(MAX_INLINE_IDS)]


def ids_at_byte_cap_longest() -> list[str]:
    """Ids of the longest allowed length (``MAX_ID_LENGTH``) totalling ``MAX_INLINE_ID_BYTES``.

    Here the byte cap binds, not the count. The rest that does not fill a whole id
    is one shorter id (distinct from the others by its length).
    """
    full, rest = divmod(MAX_INLINE_ID_BYTES, MAX_ID_LENGTH)
    ids = [padded(n, MAX_ID_LENGTH) for n in range(full)]
    if rest:
        ids.append("z" * rest)
    assert len(ids) <= MAX_INLINE_IDS
    return ids


SHAPES = {
    "count-and-bytes": ids_at_count_and_byte_cap,
    "longest-ids": ids_at_byte_cap_longest,
}
APPLY = {
    "client-side": ("apply", "-f", "-"),
    "server-side": ("apply", "--server-side", "-f", "-"),
}


def total_bytes(ids: list[str]) -> int:
    return sum(len(i.encode()) for i in ids)


def test_the_caps_fit_what_client_side_apply_can_store() -> None:
    """The arithmetic behind the cap: both shapes at the cap leave annotation room."""
    for make in SHAPES.values():
        ids = make()
        assert len(ids) <= MAX_INLINE_IDS
        assert len(set(ids)) == len(ids)
        assert all(0 < len(i) <= MAX_ID_LENGTH for i in ids)
        assert total_bytes(ids) == MAX_INLINE_ID_BYTES
        # The ids as they appear in the last-applied annotation: JSON strings and commas.
        in_annotation = len(json.dumps(ids, separators=(",", ":")))
        assert in_annotation <= ANNOTATIONS_LIMIT - 32 * 1024


def _apply(kube: Kube, how: str, manifest: dict[str, Any]):  # type: ignore[no-untyped-def]
    return kube.run(*APPLY[how], input=json.dumps(manifest), check=False, timeout=120)


def _succeeded(scenario: Scenario, name: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        dsr = scenario.dsr(name)
        phase = dsr.get("status", {}).get("phase")
        assert phase not in ("Failed", "Cancelled"), dsr.get("status")
        return dsr if phase == "Succeeded" else None

    result: dict[str, Any] = wait_until(done, timeout=timeout, interval=2, what=f"{name} Succeeded")
    return result


def _every_id_deleted_once(scenario: Scenario, token: str, ids: list[str]) -> None:
    sent = Counter(
        distinct_id
        for task in scenario.sandbox.tasks(token, kind="deletion")
        if task["state"] == "SUCCESS"
        for distinct_id in task["distinct_ids"]
    )
    assert sent.keys() == set(ids)
    assert set(sent.values()) == {1}


@pytest.mark.parametrize("how", list(APPLY))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_request_at_the_cap_applies_and_finishes(
    scenario: Scenario, kube: Kube, shape: str, how: str
) -> None:
    token = scenario.project()
    ids = SHAPES[shape]()
    manifest = scenario.request_manifest("at-cap", ids)
    result = _apply(kube, how, manifest)
    assert result.returncode == 0, result.stderr

    dsr = _succeeded(scenario, "at-cap")
    status = dsr["status"]
    assert (status["idsTotal"], status["idsDone"]) == (len(ids), len(ids))
    assert dsr["spec"]["distinctIds"] == ids
    _every_id_deleted_once(scenario, token, ids)

    # The same manifest applied again (what GitOps does on every sync), with a label
    # added so that it is a real update, after the operator wrote status and metadata.
    manifest["metadata"]["labels"] = {"ticket": "priv-1234"}
    again = _apply(kube, how, manifest)
    assert again.returncode == 0, again.stderr
    assert scenario.dsr("at-cap")["metadata"]["labels"]["ticket"] == "priv-1234"


def _over_count() -> list[str]:
    """One id more than the count cap, in few enough bytes that only the count is over."""
    ids = [padded(n, len(str(MAX_INLINE_IDS))) for n in range(MAX_INLINE_IDS + 1)]
    assert total_bytes(ids) <= MAX_INLINE_ID_BYTES
    return ids


def _over_bytes() -> list[str]:
    """One byte more than the byte cap, within the count cap (longest ids)."""
    ids = ids_at_byte_cap_longest()
    if len(ids[-1]) < MAX_ID_LENGTH:
        ids[-1] += "z"
    else:
        ids.append("z")
    assert total_bytes(ids) == MAX_INLINE_ID_BYTES + 1
    assert len(ids) <= MAX_INLINE_IDS
    return ids


@pytest.mark.parametrize(
    "how",
    [("create", "-f", "-"), APPLY["client-side"], APPLY["server-side"]],
    ids=["create", "client-side-apply", "server-side-apply"],
)
@pytest.mark.parametrize(
    ("ids", "limit"),
    [(_over_count, MAX_INLINE_IDS), (_over_bytes, MAX_INLINE_ID_BYTES)],
    ids=["count", "bytes"],
)
def test_a_request_over_the_cap_is_refused_pointing_to_a_secret(
    kube: Kube, namespace: str, ids: Any, limit: int, how: tuple[str, ...]
) -> None:
    manifest = {
        "apiVersion": "mixpaneldsr.io/v1alpha1",
        "kind": "DataSubjectRequest",
        "metadata": {"name": "over-cap", "namespace": namespace},
        "spec": {"projectRef": {"name": "proj"}, "type": "Deletion", "distinctIds": ids()},
    }
    result = kube.run(*how, input=json.dumps(manifest), check=False, timeout=120)
    assert result.returncode != 0, "a request over the cap was admitted"
    message = result.stderr
    assert "spec.distinctIds" in message, message
    assert str(limit) in message, message
    assert "Secret" in message, message
    assert "distinctIdsFrom" in message, message
    missing = kube.run("get", "dsr", "over-cap", "-n", namespace, check=False)
    assert missing.returncode != 0


@pytest.mark.timeout(900)
def test_one_hundred_thousand_ids_from_a_secret_finish(scenario: Scenario, kube: Kube) -> None:
    # Mixpanel allows one call a second; the sandbox lets this project go faster so
    # the 50 tasks of 2000 ids are created and followed within the timeout.
    token = scenario.project(requestInterval="100ms")
    scenario.sandbox.post(f"/projects/{token}", {"rate_limit_per_s": 0})
    ids = [f"s{n:07d}" for n in range(SECRET_IDS)]
    text = "\n".join(ids) + "\n"
    assert len(text.encode()) < SECRET_LIMIT
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bulk-ids", "namespace": scenario.namespace},
        "data": {"ids": base64.b64encode(text.encode()).decode()},
    }
    # A Secret this large cannot go through client-side apply either (its last-applied
    # copy would pass 256 KiB of annotations); server-side apply is what works.
    kube.run("apply", "--server-side", "-f", "-", input=json.dumps(secret), timeout=120)
    kube.apply(
        {
            "apiVersion": "mixpaneldsr.io/v1alpha1",
            "kind": "DataSubjectRequest",
            "metadata": {"name": "bulk", "namespace": scenario.namespace},
            "spec": {
                "projectRef": {"name": "proj"},
                "type": "Deletion",
                "distinctIdsFrom": {"secretKeyRef": {"name": "bulk-ids", "key": "ids"}},
            },
        }
    )
    dsr = _succeeded(scenario, "bulk", timeout=600)
    status = dsr["status"]
    assert (status["idsTotal"], status["idsDone"]) == (SECRET_IDS, SECRET_IDS)
    _every_id_deleted_once(scenario, token, ids)

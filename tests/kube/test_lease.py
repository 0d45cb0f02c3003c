"""`kube.lease.LeaseElector` against a real apiserver: one holder at a time, renewal, takeover only
after the holder stops renewing for a lease duration (as the taker observed it), and release."""

from __future__ import annotations

import time

import kubernetes
from harness.wait import wait_until

from tokenscale.kube.lease import LeaseElector

DURATION_S = 2.0


def _elector(api_client: kubernetes.client.ApiClient, namespace: str, identity: str) -> LeaseElector:
    return LeaseElector(api_client, namespace, "tokenscale", identity, lease_duration_s=DURATION_S)


def _holder(api_client: kubernetes.client.ApiClient, namespace: str) -> str | None:
    lease = kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease("tokenscale", namespace)
    return lease.spec.holder_identity  # type: ignore[union-attr,no-any-return]


def test_one_holder_and_takeover_after_the_holder_stops_renewing(
    api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    a, b = _elector(api_client, namespace, "a"), _elector(api_client, namespace, "b")
    assert a.try_acquire_or_renew()  # creates the Lease
    assert not b.try_acquire_or_renew()
    # a renews well within the duration: b never gets it, however often it asks.
    deadline = time.monotonic() + 2.5 * DURATION_S
    while time.monotonic() < deadline:
        assert a.try_acquire_or_renew()
        renewed = time.monotonic()
        assert not b.try_acquire_or_renew()
        time.sleep(DURATION_S / 4)
    assert _holder(api_client, namespace) == "a"
    # a stops renewing: b takes over once the record has not changed for a duration, not before.
    assert not b.try_acquire_or_renew()
    wait_until(lambda: b.try_acquire_or_renew() or None, what="b to take over", timeout_s=4 * DURATION_S,
               interval_s=0.1)  # fmt: skip
    assert time.monotonic() - renewed >= DURATION_S
    assert _holder(api_client, namespace) == "b"
    assert not a.try_acquire_or_renew(), "the old holder must not take it back while b renews"
    lease = kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease("tokenscale", namespace)
    assert lease.spec.lease_transitions == 1  # type: ignore[union-attr]


def test_release_hands_over_at_once(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    a, b = _elector(api_client, namespace, "a"), _elector(api_client, namespace, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    b.release()  # not the holder: nothing changes
    assert _holder(api_client, namespace) == "a"
    a.release()
    assert _holder(api_client, namespace) is None
    assert b.try_acquire_or_renew()
    assert _holder(api_client, namespace) == "b"

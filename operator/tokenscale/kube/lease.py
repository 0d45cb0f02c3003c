"""Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas one acts.

Called by `controller` when `tokenscale run --leader-election-namespace NS` is given (the chart runs
two replicas). The rules are client-go's `leaderelection` with a `LeaseLock`:
- a replica takes the Lease when it does not exist, when it holds it already, or when the holder has
  not renewed it for `lease_duration_s` *as this replica observed it* (the time a changed record was
  first seen here, on this replica's monotonic clock: no trust in other machines' clocks);
- every write carries the resourceVersion that was read, so two replicas racing for an expired Lease
  get one 200 and one 409: exactly one wins;
- the leader renews every `retry_period_s`; one that has not renewed for `renew_deadline_s`
  (< `lease_duration_s`) has lost the Lease and must stop acting before anyone else may take it.

The `kubernetes` client is synchronous: the caller runs `try_acquire_or_renew` on a worker thread.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import urllib3

from tokenscale.kube.scale import KubeError, body_of, translate

LEASE_DURATION_S = 15.0  # a standby takes over this long after the leader's last renewal
RENEW_DEADLINE_S = 10.0  # a leader that could not renew for this long stops acting
RETRY_PERIOD_S = 2.0  # how often the leader renews and a standby tries


def _micro_time(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaseElector:
    """One replica's view of the Lease `namespace/name`; `identity` names this replica (its pod name)."""

    api: kubernetes.client.ApiClient
    namespace: str
    name: str
    identity: str
    lease_duration_s: float = LEASE_DURATION_S
    _observed: tuple[Any, ...] | None = field(default=None, repr=False)
    _observed_at: float = field(default=0.0, repr=False)

    def try_acquire_or_renew(self) -> bool:
        """Blocking: one attempt to take or keep the Lease. True when this replica holds it now.

        Raises `KubeError` when the API server cannot be asked (the caller retries; a leader counts
        it against its renew deadline).
        """
        coordination = kubernetes.client.CoordinationV1Api(self.api)
        now = dt.datetime.now(dt.UTC)
        try:
            try:
                lease = body_of(coordination.read_namespaced_lease(self.name, self.namespace, _preload_content=False))
            except kubernetes.client.ApiException as err:
                if err.status != 404:
                    raise
                body: Any = {
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, transitions=0, acquired=_micro_time(now)),
                }
                try:
                    coordination.create_namespaced_lease(self.namespace, body, _preload_content=False)
                except kubernetes.client.ApiException as exists:
                    if exists.status == 409:  # another replica created it first
                        return False
                    raise
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))
            if record != self._observed:
                self._observed, self._observed_at = record, time.monotonic()
            mine = holder == self.identity
            duration_s = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
            expired = time.monotonic() - self._observed_at > duration_s
            if not mine and holder and not expired:
                return False
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
            acquired = str(spec.get("acquireTime") or "") if mine else ""
            acquired = acquired or _micro_time(now)
            body = {
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "resourceVersion": lease["metadata"]["resourceVersion"],
                },
                "spec": self._spec(now, transitions=transitions, acquired=acquired),
            }
            try:
                coordination.replace_namespaced_lease(self.name, self.namespace, body, _preload_content=False)
            except kubernetes.client.ApiException as conflict:
                if conflict.status == 409:  # someone else wrote it since the read: not ours this round
                    return False
                raise
            return True
        except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError) as err:
            raise translate(err, f"take or renew the Lease {self.namespace}/{self.name}") from None

    def release(self) -> None:
        """Blocking: give the Lease up (on a clean stop), so a standby need not wait for it to expire."""
        coordination = kubernetes.client.CoordinationV1Api(self.api)
        try:
            lease = body_of(coordination.read_namespaced_lease(self.name, self.namespace, _preload_content=False))
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            body: Any = {
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": lease["metadata"]["resourceVersion"]},
                "spec": {**spec, "holderIdentity": None, "leaseDurationSeconds": 1},
            }  # fmt: skip
            coordination.replace_namespaced_lease(self.name, self.namespace, body, _preload_content=False)
        except (kubernetes.client.ApiException, urllib3.exceptions.HTTPError) as err:
            raise translate(err, f"release the Lease {self.namespace}/{self.name}") from None

    def _spec(self, now: dt.datetime, *, transitions: int, acquired: str) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration_s),
            "acquireTime": acquired,
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }


__all__ = ["LeaseElector", "KubeError", "LEASE_DURATION_S", "RENEW_DEADLINE_S", "RETRY_PERIOD_S"]

"""kopf handlers of the tokenscale operator: wiring only, no math (STYLE.md §5).

`run()` (the `tokenscale run` command) starts kopf with these handlers:
- startup: kopf settings (standalone, `tokenscale.dev` annotations and finalizer), the Kubernetes API
  client, the Prometheus client cache and the operator's metrics server, into kopf's memo, and a
  task that gives free C heap memory back to the system every 10 s (`heap`). With leader election
  (`--leader-election-namespace`) it first waits for the Lease (`kube.lease`), answering /healthz
  meanwhile, so no daemon runs on a standby; the leader renews it and exits if it cannot;
- a daemon per InferencePool: `reconcile.cycle` every `spec.interval`, then its Events. A daemon
  rather than a timer because a timer's interval is fixed at registration, and the interval is
  the pool's (STYLE.md §7); the daemon's `body` is kopf's live view, so each cycle sees the latest
  spec. Each pool has its own task, so one slow pool never delays another;
- deletion: the pool's metric series are dropped;
- cleanup: clients closed.
Everything a decision needs is in the pool's status (see `status`), so a restarted operator
continues where the last one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import logging
import os
import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import kopf
import kubernetes
import yaml
from prometheus_client import start_http_server

from tokenscale import heap
from tokenscale.api import GROUP, PLURAL, VERSION
from tokenscale.kube import lease
from tokenscale.kube.scale import KubeError
from tokenscale.reconcile import OperatorConfig, OperatorContext, PrometheusClients, cycle, first_delay_s
from tokenscale.telemetry import OperatorMetrics

MALLOC_ARENAS = 2  # see tokenscale.heap
HEAP_RELEASE_INTERVAL_S = 10.0  # free C heap memory given back to the system this often
EXIT_LOST_LEASE = 3  # the leader could not renew its Lease in time: restart as a standby
KUBE_THREADS = 8  # worker threads for Kubernetes API calls: ~17 cycles a second at 500 pools, each a few ms


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    settings.peering.standalone = True  # replicas coordinate through our Lease (kube/lease.py), not kopf peering
    # No cluster scanning for namespaces and CRDs: the namespaces are given by name (or it is
    # cluster-wide) and the CRD is installed before the operator, so the chart's namespaced mode
    # needs no cluster-wide list of namespaces.
    settings.scanning.disabled = True
    settings.persistence.finalizer = "tokenscale.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tokenscale.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="tokenscale.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what happened; kopf adds only its errors
    settings.watching.server_timeout = 270  # re-list before an apiserver's 5-minute watch limit
    settings.watching.client_timeout = 300
    load_credentials()
    # The kubernetes client is synchronous: its calls run on worker threads (asyncio.to_thread).
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=KUBE_THREADS, thread_name_prefix="kube")
    )
    configuration = kubernetes.client.Configuration.get_default_copy()
    # One kept-alive connection per worker thread: with fewer (the client's default is 4), requests
    # beyond them open a TLS connection each and discard it after (urllib3 "pool is full").
    configuration.connection_pool_maxsize = KUBE_THREADS
    api_client = kubernetes.client.ApiClient(configuration)
    metrics = OperatorMetrics()
    if memo.get("metrics_port"):  # a standby serves its metrics too (tokenscale_leader 0): it is up
        server, thread = start_http_server(memo["metrics_port"], registry=metrics.registry)
        memo["metrics_server"] = server
    election: LeaderElection | None = memo.get("election")
    if election is not None:
        # No daemon starts, so nothing is read or written, until this replica leads.
        elector = lease.LeaseElector(api_client, election.namespace, election.lease, election.identity)
        await _lead(elector, memo.get("health_port") or 0, logger)
        memo["elector"] = elector
        memo["lease_renewal"] = asyncio.create_task(_keep_leading(elector, logger), name="tokenscale lease renewal")
    metrics.leader.set(1)
    memo["ctx"] = OperatorContext(
        api=api_client,
        config=memo.get("config") or OperatorConfig(),
        prometheus=PrometheusClients(),
        metrics=metrics,
    )
    memo["heap_release"] = asyncio.create_task(_release_heap_periodically(), name="tokenscale heap release")
    logger.info("tokenscale operator started: dry_run=%s", memo["ctx"].config.dry_run)


@dataclass(frozen=True)
class LeaderElection:
    """`tokenscale run --leader-election-namespace`: the Lease to hold before acting, and who we are."""

    namespace: str
    lease: str
    identity: str  # the pod's name (POD_NAME), else host and pid


class _StandbyHealth(http.server.BaseHTTPRequestHandler):
    """GET /healthz → 200 while a standby waits for the Lease (kopf's own endpoint starts once it leads)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


Logger = logging.Logger | logging.LoggerAdapter[Any]


async def _lead(elector: lease.LeaseElector, health_port: int, logger: Logger) -> None:
    """Wait until this replica holds the Lease, answering liveness probes meanwhile."""
    health = http.server.ThreadingHTTPServer(("0.0.0.0", health_port), _StandbyHealth) if health_port else None
    thread = threading.Thread(target=health.serve_forever, kwargs={"poll_interval": 0.2}) if health else None
    if thread is not None:
        thread.start()
    try:
        logger.info("standby: waiting for the Lease %s/%s as %s", elector.namespace, elector.name, elector.identity)
        while not await _try_lease(elector, logger):
            await asyncio.sleep(lease.RETRY_PERIOD_S)
        logger.info("leader: holds the Lease %s/%s as %s", elector.namespace, elector.name, elector.identity)
    finally:
        if health is not None and thread is not None:
            health.shutdown()
            thread.join()
            health.server_close()


async def _try_lease(elector: lease.LeaseElector, logger: Logger) -> bool:
    try:
        return await asyncio.to_thread(elector.try_acquire_or_renew)
    except KubeError as err:
        logger.warning("Lease %s/%s: %s", elector.namespace, elector.name, err)
        return False


async def _keep_leading(elector: lease.LeaseElector, logger: Logger) -> None:
    """Renew the Lease every retry period; past the renew deadline without renewal, stop at once.

    The process exits (as client-go's elector does) rather than finishing its cycles: another replica
    may take the Lease `LEASE_DURATION_S - RENEW_DEADLINE_S` later, and two must never write a pool.
    The Deployment restarts it, as a standby.
    """
    renewed = time.monotonic()
    while True:
        await asyncio.sleep(lease.RETRY_PERIOD_S)
        if await _try_lease(elector, logger):
            renewed = time.monotonic()
        elif time.monotonic() - renewed > lease.RENEW_DEADLINE_S:
            logger.error("lost the Lease %s/%s (not renewed for %.0f s): exiting", elector.namespace, elector.name,
                         time.monotonic() - renewed)  # fmt: skip
            logging.shutdown()
            os._exit(EXIT_LOST_LEASE)


class CredentialsError(Exception):
    """No usable Kubernetes credentials: neither in a cluster nor a readable kubeconfig."""


def load_credentials() -> None:
    """Configure the kubernetes client: in-cluster (a ServiceAccount), else the kubeconfig.

    Called by `tokenscale run` before kopf starts, so a machine without credentials gets one line
    and a non-zero exit instead of kopf retrying the startup handler every minute (issue 13).
    """
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        return
    except kubernetes.config.ConfigException:
        pass
    try:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, OSError, yaml.YAMLError) as err:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        detail = " ".join(str(err).split())
        raise CredentialsError(
            f"no Kubernetes credentials: not in a cluster, and the kubeconfig ({where}) is unusable: {detail}"
        ) from None


async def _release_heap_periodically() -> None:
    while True:
        await asyncio.sleep(HEAP_RELEASE_INTERVAL_S)
        await asyncio.to_thread(heap.release_free)


@kopf.on.cleanup()
async def close(memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    for task in ("heap_release", "lease_renewal"):
        if task in memo:
            memo[task].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await memo[task]
    if "elector" in memo:  # a clean stop hands over at once instead of after the Lease expires
        try:
            await asyncio.to_thread(memo["elector"].release)
        except KubeError as err:
            logger.warning("could not release the Lease: %s", err)
    ctx: OperatorContext = memo["ctx"]
    ctx.prometheus.close()
    ctx.api.close()  # type: ignore[no-untyped-call]
    if "metrics_server" in memo:
        memo["metrics_server"].shutdown()


@kopf.daemon(GROUP, VERSION, PLURAL, backoff=10.0, cancellation_timeout=10.0)
async def plan_pool(
    stopped: kopf.DaemonStopped,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    ctx: OperatorContext = memo["ctx"]
    assert namespace is not None  # InferencePool is namespaced
    loop = asyncio.get_running_loop()
    await stopped.wait(first_delay_s(body))
    due = loop.time()
    while not stopped:
        outcome = await cycle(ctx, namespace, name, body, logger)
        for event in outcome.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        # Cycles are due every interval from the first, whatever one took or however late the
        # event loop woke this task: counting from when a cycle ended, or began, would stretch each
        # period by that much, and the pool would drift. One that overran starts at once, no burst.
        due = max(due + outcome.next_in_s, loop.time())
        await stopped.wait(due - loop.time())


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def forget_pool(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    ctx: OperatorContext = memo["ctx"]
    ctx.metrics.forget(namespace or "", name)
    ctx.forget(namespace or "", name)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        k8s = getattr(record, "k8s_ref", None)
        if isinstance(k8s, dict):
            entry["object"] = f"{k8s.get('namespace', '')}/{k8s.get('name', '')}"
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def run(
    config: OperatorConfig,
    namespaces: Collection[str],
    health_port: int,
    metrics_port: int,
    log_format: str,
    verbose: bool = False,
    election: LeaderElection | None = None,
) -> None:
    """Run the operator until SIGINT/SIGTERM: for `namespaces`, or cluster-wide when there are none."""
    heap.limit_arenas(MALLOC_ARENAS)
    handler = logging.StreamHandler()
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(_JsonFormatter() if log_format == "json" else text)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
        memo=kopf.Memo(config=config, metrics_port=metrics_port, health_port=health_port, election=election),
    )

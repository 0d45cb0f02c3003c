"""A real Kubernetes control plane on loopback: etcd, kube-apiserver 1.20.2 and kube-controller-manager.

`start_cluster` runs the recipe of ../shared/TESTING.md in a work directory: it generates the
service-account key pair and a token file, starts each component on free 127.0.0.1 ports, polls
each one's health endpoint with a deadline, and writes a kubeconfig (server, the apiserver's
self-signed CA, an admin bearer token). The returned `Cluster` hands out API clients and runs
kubectl against it, restarts the apiserver for fault tests, and `stop()`s the controller manager
first, then the apiserver (SIGKILL after 5 s: its SIGTERM drains for 61 s), then etcd, each by PID.
Logs stay in the work directory; a start-up failure raises with the end of the failing component's
log. The session-scoped `cluster` fixture in tests/conftest.py is the caller.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from harness import binaries
from harness.processes import ManagedProcess, Supervisor, free_port
from harness.tools import Kubectl
from harness.wait import wait_until

# Controllers that need nodes or a cloud are off; the rest (deployment, replicaset, garbage
# collector, namespace, service account and its tokens) run as in a real cluster.
CONTROLLERS = "*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-ttl,-bootstrapsigner,-tokencleaner"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"
READY_TIMEOUT_S = 60.0
APISERVER_GRACE_S = 5.0
_PORT_ATTEMPTS = 3


class ClusterStartError(RuntimeError):
    """A component exited or did not become ready; the message carries the end of its log."""


class _AddressInUse(ClusterStartError):
    """A component lost the race for its port to another process; start again on new ports."""


def close_api_client(client: kubernetes.client.ApiClient) -> None:
    """Stop the client's connection pool (and its worker threads, if any were started)."""
    close: Callable[[], None] = client.close  # untyped in the client
    close()


class Cluster:
    """A running test cluster: how to reach it, its processes, and what tests do with it."""

    def __init__(
        self,
        *,
        server_url: str,
        token: str,
        ca_path: Path,
        kubeconfig_path: Path,
        work_dir: Path,
        supervisor: Supervisor,
        etcd: ManagedProcess,
        apiserver: ManagedProcess,
        controller_manager: ManagedProcess | None,
        started_in_s: float,
    ) -> None:
        self.server_url = server_url
        self.token = token
        self.ca_path = ca_path
        self.kubeconfig_path = kubeconfig_path
        self.work_dir = work_dir
        self.supervisor = supervisor
        self.etcd = etcd
        self.apiserver = apiserver
        self.controller_manager = controller_manager
        self.started_in_s = started_in_s
        self._kubectl = Kubectl(
            binary=binaries.find("kubectl"), kubeconfig=kubeconfig_path, cache_dir=work_dir / "kubectl-cache"
        )
        self._clients: list[kubernetes.client.ApiClient] = []

    def api_client(self) -> kubernetes.client.ApiClient:
        """A new kubernetes client configured from this cluster's kubeconfig (no global config).

        The cluster closes it in `stop()`; close it earlier with `close_api_client` if you like.
        """
        load: Callable[..., Any] = kubernetes.config.new_client_from_config  # untyped in the client
        client: kubernetes.client.ApiClient = load(config_file=str(self.kubeconfig_path))
        self._clients.append(client)
        return client

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout_s: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl with this cluster's kubeconfig; `check` raises `CommandFailed` on a non-zero exit."""
        return self._kubectl.run(*args, stdin=stdin, check=check, timeout_s=timeout_s)

    def processes(self) -> list[ManagedProcess]:
        found = [self.etcd, self.apiserver]
        return found + [self.controller_manager] if self.controller_manager else found

    def log_report(self, max_lines: int = 30) -> str:
        """The end of each component's log, for failure reports."""
        return "\n\n".join(p.describe(max_lines) for p in self.processes())

    def restart_apiserver(self, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Kill kube-apiserver and start it again on the same port over the same etcd (fault tests).

        Watches and connections break; objects stay; a watch from an old resourceVersion may get 410.
        """
        self.stop_apiserver()
        self.start_apiserver(timeout_s=timeout_s)

    def stop_apiserver(self) -> None:
        """Kill kube-apiserver (SIGKILL) and leave it down; `start_apiserver` brings it back."""
        self.apiserver.kill()

    def start_apiserver(self, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start a stopped kube-apiserver again on its port over the same etcd; return once /readyz answers."""
        if self.apiserver.alive():
            raise RuntimeError(f"kube-apiserver (pid {self.apiserver.pid}) is already running")
        self.apiserver = self.supervisor.start(self.apiserver.name, self.apiserver.argv, self.apiserver.log_path)
        _wait_healthy(
            self.apiserver, f"{self.server_url}/readyz", token=self.token, ca_path=self.ca_path, timeout_s=timeout_s
        )

    def stop(self) -> None:
        """Controller manager, then apiserver (SIGKILL after 5 s), then etcd: only the PIDs started here."""
        for client in self._clients:
            close_api_client(client)
        self._clients.clear()
        if self.controller_manager is not None:
            self.controller_manager.stop(grace_s=5.0)
        self.apiserver.stop(grace_s=APISERVER_GRACE_S)
        self.etcd.stop(grace_s=10.0)


def _http_get(url: str, *, token: str | None = None, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    """Status and body of a GET; connection errors propagate (as OSError) for the caller to retry."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _wait_healthy(
    process: ManagedProcess,
    url: str,
    *,
    timeout_s: float,
    token: str | None = None,
    ca_path: Path | None = None,
    insecure: bool = False,
) -> None:
    """Poll `url` until it answers 200, failing at once if the process exits."""

    def probe() -> bool:
        if not process.alive():
            log = process.log_tail(200)
            error = _AddressInUse if "address already in use" in log else ClusterStartError
            raise error(f"{process.name} exited before it was ready: {process.describe(30)}")
        context: ssl.SSLContext | None = None
        if url.startswith("https://"):
            if insecure:
                context = ssl._create_unverified_context()  # the controller manager's throwaway self-signed cert
            else:
                if ca_path is None or not ca_path.exists():
                    return False
                context = ssl.create_default_context(cafile=str(ca_path))
        status, _ = _http_get(url, token=token, context=context)
        return status == 200

    try:
        wait_until(probe, what=f"{process.name} at {url}", timeout_s=timeout_s, interval_s=0.2, retry_on=(OSError,))
    except AssertionError as err:
        process.kill()
        raise ClusterStartError(f"{err}\n{process.describe(30)}") from err
    except BaseException:
        process.kill()
        raise


def _generate_service_account_keys(work_dir: Path) -> tuple[Path, Path]:
    openssl = str(binaries.find("openssl"))
    private, public = work_dir / "sa.key", work_dir / "sa.pub"
    subprocess.run([openssl, "genrsa", "-out", str(private), "2048"], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [openssl, "rsa", "-in", str(private), "-pubout", "-out", str(public)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return private, public


def write_kubeconfig(path: Path, *, server_url: str, ca_path: Path, token: str, namespace: str = "default") -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "tokenscale-test", "cluster": {"server": server_url, "certificate-authority": str(ca_path)}}
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": "tokenscale-test",
                "context": {"cluster": "tokenscale-test", "user": "admin", "namespace": namespace},
            }
        ],
        "current-context": "tokenscale-test",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _start_etcd(supervisor: Supervisor, work_dir: Path, timeout_s: float) -> tuple[ManagedProcess, str]:
    client_port, peer_port = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    process = supervisor.start(
        "etcd",
        [
            str(binaries.find("etcd")),
            "--name=t",
            f"--data-dir={work_dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=t={peer_url}",
            "--unsafe-no-fsync",
        ],
        work_dir / "logs" / "etcd.log",
    )
    _wait_healthy(process, f"{client_url}/health", timeout_s=timeout_s)
    return process, client_url


def _start_apiserver(
    supervisor: Supervisor,
    work_dir: Path,
    *,
    etcd_url: str,
    token_file: Path,
    sa_keys: tuple[Path, Path],
    token: str,
    with_controller_manager: bool,
    timeout_s: float,
) -> tuple[ManagedProcess, str, Path]:
    port = free_port()
    cert_dir = work_dir / "certs"
    argv = [
        str(binaries.find("kube-apiserver")),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        f"--token-auth-file={token_file}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={sa_keys[1]}",
        f"--service-account-signing-key-file={sa_keys[0]}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
    ]
    if not with_controller_manager:
        # Without the token controller no ServiceAccount exists, and admission would refuse every Pod.
        argv.append("--disable-admission-plugins=ServiceAccount")
    process = supervisor.start("kube-apiserver", argv, work_dir / "logs" / "kube-apiserver.log")
    url = f"https://127.0.0.1:{port}"
    ca_path = cert_dir / "apiserver.crt"
    _wait_healthy(process, f"{url}/readyz", token=token, ca_path=ca_path, timeout_s=timeout_s)
    return process, url, ca_path


def _start_controller_manager(
    supervisor: Supervisor, work_dir: Path, *, kubeconfig: Path, sa_key: Path, ca_path: Path, timeout_s: float
) -> ManagedProcess:
    port = free_port()
    process = supervisor.start(
        "kube-controller-manager",
        [
            str(binaries.find("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--port=0",  # no insecure port: its fixed 10252 would collide with a second test session
            f"--cert-dir={work_dir / 'controller-manager-certs'}",
            "--leader-elect=false",
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={ca_path}",
            f"--controllers={CONTROLLERS}",
        ],
        work_dir / "logs" / "kube-controller-manager.log",
    )
    _wait_healthy(process, f"https://127.0.0.1:{port}/healthz", insecure=True, timeout_s=timeout_s)
    return process


def _wait_default_service_account(
    *, server_url: str, token: str, ca_path: Path, process: ManagedProcess, timeout_s: float
) -> None:
    """The controller manager's service-account controllers work once `default/default` has a token."""
    context = ssl.create_default_context(cafile=str(ca_path))
    url = f"{server_url}/api/v1/namespaces/default/serviceaccounts/default"

    def probe() -> bool:
        if not process.alive():
            raise ClusterStartError(f"{process.name} exited: {process.describe(30)}")
        status, body = _http_get(url, token=token, context=context)
        return status == 200 and bool(json.loads(body).get("secrets"))

    try:
        wait_until(
            probe,
            what="the default ServiceAccount and its token",
            timeout_s=timeout_s,
            interval_s=0.2,
            retry_on=(OSError,),
        )
    except AssertionError as err:
        raise ClusterStartError(f"{err}\n{process.describe(30)}") from err


def start_cluster(
    supervisor: Supervisor,
    work_dir: Path,
    *,
    with_controller_manager: bool = True,
    timeout_s: float = READY_TIMEOUT_S,
) -> Cluster:
    """Start etcd, kube-apiserver and (optionally) kube-controller-manager; return once all are ready.

    Raises `binaries.MissingBinaryError` when a program is not installed and `ClusterStartError`
    when a component exits or misses its deadline (`timeout_s` for each component). Processes are
    started through `supervisor`, so its owner stops them even if the caller never calls `stop()`.
    """
    for name in ("etcd", "kube-apiserver", "openssl", "kubectl") + (
        ("kube-controller-manager",) if with_controller_manager else ()
    ):
        binaries.find(name)
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    sa_keys = _generate_service_account_keys(work_dir)
    # A random admin token rather than a fixed one: other users of the machine can reach loopback ports.
    token = secrets.token_hex(16)
    token_file = work_dir / "tokens.csv"
    token_file.write_text(f"{token},admin,admin,system:masters\n")
    kubeconfig = work_dir / "kubeconfig"

    for attempt in range(1, _PORT_ATTEMPTS + 1):
        attempt_dir = work_dir / f"attempt-{attempt}" if attempt > 1 else work_dir
        processes: list[ManagedProcess] = []
        try:
            etcd, etcd_url = _start_etcd(supervisor, attempt_dir, timeout_s)
            processes.append(etcd)
            apiserver, url, ca_path = _start_apiserver(
                supervisor,
                attempt_dir,
                etcd_url=etcd_url,
                token_file=token_file,
                sa_keys=sa_keys,
                token=token,
                with_controller_manager=with_controller_manager,
                timeout_s=timeout_s,
            )
            processes.append(apiserver)
            write_kubeconfig(kubeconfig, server_url=url, ca_path=ca_path, token=token)
            controller_manager = None
            if with_controller_manager:
                controller_manager = _start_controller_manager(
                    supervisor,
                    attempt_dir,
                    kubeconfig=kubeconfig,
                    sa_key=sa_keys[0],
                    ca_path=ca_path,
                    timeout_s=timeout_s,
                )
                processes.append(controller_manager)
                _wait_default_service_account(
                    server_url=url, token=token, ca_path=ca_path, process=controller_manager, timeout_s=timeout_s
                )
            return Cluster(
                server_url=url,
                token=token,
                ca_path=ca_path,
                kubeconfig_path=kubeconfig,
                work_dir=work_dir,
                supervisor=supervisor,
                etcd=etcd,
                apiserver=apiserver,
                controller_manager=controller_manager,
                started_in_s=time.monotonic() - started,
            )
        except _AddressInUse:
            for process in reversed(processes):
                process.kill()
            if attempt == _PORT_ATTEMPTS:
                raise
        except BaseException:
            for process in reversed(processes):
                process.kill()
            raise
    raise AssertionError("unreachable")

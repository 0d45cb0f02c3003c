"""Real Prometheus servers (Debian's `prometheus` 2.42) for tests of the metrics layer and the operator.

`PrometheusFactory.start(targets)` (or calling the factory) writes a configuration with
`scrape_interval: 1s` / `evaluation_interval: 1s` scraping the given `host:port` targets (or full
scrape configs, and rule files), starts Prometheus on a free 127.0.0.1 port with its own TSDB
directory, and returns a `Prometheus` once `/-/ready` answers. A `Prometheus` can be stopped, killed
and started again on the same port and data (fault tests: Prometheus down, Prometheus restarted),
queried, and polled for a series: the first scrape lands about 5 s after start (initial discovery
sync), so tests wait with `wait_for_series` rather than sleeping. The session-scoped
`prometheus_factory` fixture in tests/conftest.py owns the factory: servers started while a test
runs are stopped when that test ends, servers started by session fixtures at the end of the session.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.processes import ManagedProcess, Supervisor, free_port
from harness.wait import wait_until

SCRAPE_INTERVAL = "1s"
READY_TIMEOUT_S = 30.0
_PORT_ATTEMPTS = 3


def bucket_width(bounds: Sequence[float], value: float) -> float:
    """Width of the histogram bucket holding `value`: as close as `histogram_quantile`'s linear
    interpolation inside a bucket can come to the true quantile."""
    upper = next(b for b in bounds if b >= value)
    lower = max((b for b in bounds if b < value), default=0.0)
    return upper - lower


class PrometheusStartError(RuntimeError):
    """Prometheus exited or was not ready in time; the message carries the end of its log."""


def static_scrape_config(job: str, targets: Sequence[str], *, metrics_path: str = "/metrics") -> dict[str, Any]:
    """One `scrape_configs` entry scraping fixed `host:port` targets (every second, the global interval)."""
    return {"job_name": job, "metrics_path": metrics_path, "static_configs": [{"targets": list(targets)}]}


class Prometheus:
    """One Prometheus server: its address, its files, and its process while it runs."""

    def __init__(self, *, binary: Path, port: int, config_path: Path, data_dir: Path, supervisor: Supervisor) -> None:
        self.binary = binary
        self.port = port
        self.config_path = config_path
        self.data_dir = data_dir
        self.log_path = config_path.parent / "prometheus.log"
        self._supervisor = supervisor
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process is not None and self.process.alive()

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start (again) on the same port with the same data; return when `/-/ready` answers 200."""
        if self.running():
            raise RuntimeError(f"Prometheus at {self.url} is already running")
        process = self._supervisor.start(
            "prometheus",
            [
                str(self.binary),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            self.log_path,
        )
        self.process = process

        def ready() -> bool:
            if not process.alive():
                raise PrometheusStartError(f"Prometheus exited before it was ready: {process.describe(30)}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    return int(response.status) == 200
            except urllib.error.HTTPError:
                return False

        try:
            wait_until(
                ready, what=f"Prometheus at {self.url}", timeout_s=timeout_s, interval_s=0.1, retry_on=(OSError,)
            )
        except BaseException:
            process.kill()
            raise

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop gracefully (SIGTERM, SIGKILL after `grace_s`); a no-op when it is not running."""
        if self.process is not None:
            self.process.stop(grace_s)

    def kill(self) -> None:
        """Crash it (SIGKILL): the TSDB keeps only what its write-ahead log holds."""
        if self.process is not None:
            self.process.kill()

    def restart(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Stop and start again on the same port and data."""
        self.stop()
        self.start(timeout_s)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result of an instant query (raises on an HTTP or PromQL error; OSError when it is down)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for_series(self, promql: str, *, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns at least one series, and return them."""
        return wait_until(
            lambda: self.query(promql) or None,
            what=f"a series for {promql!r} in Prometheus at {self.url}",
            timeout_s=timeout_s,
            interval_s=0.25,
            retry_on=(OSError,),
        )


class PrometheusFactory:
    """Starts Prometheus servers in `work_dir` through `supervisor`, and stops them on request."""

    def __init__(self, binary: Path, supervisor: Supervisor, work_dir: Path) -> None:
        self._binary = binary
        self._supervisor = supervisor
        self._work_dir = work_dir
        self._servers: list[Prometheus] = []

    def __call__(
        self,
        targets: Sequence[str] = (),
        *,
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        rule_files: Sequence[Path] = (),
        timeout_s: float = READY_TIMEOUT_S,
    ) -> Prometheus:
        """Same as `start`."""
        return self.start(targets, scrape_configs=scrape_configs, rule_files=rule_files, timeout_s=timeout_s)

    def start(
        self,
        targets: Sequence[str] = (),
        *,
        scrape_configs: Sequence[Mapping[str, Any]] = (),
        rule_files: Sequence[Path] = (),
        timeout_s: float = READY_TIMEOUT_S,
    ) -> Prometheus:
        """A running Prometheus scraping `targets` (job "test") and `scrape_configs` every second.

        `rule_files` are evaluated every second too.
        """
        directory = self._work_dir / f"prometheus-{len(self._servers) + 1}"
        directory.mkdir(parents=True)
        jobs = [static_scrape_config("test", targets)] if targets else []
        config = {
            "global": {
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "evaluation_interval": SCRAPE_INTERVAL,
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": jobs + [dict(c) for c in scrape_configs],
        }
        config_path = directory / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            server = Prometheus(
                binary=self._binary,
                port=free_port(),
                config_path=config_path,
                data_dir=directory / "data",
                supervisor=self._supervisor,
            )
            try:
                server.start(timeout_s)
            except PrometheusStartError as err:
                if "address already in use" not in str(err) or attempt == _PORT_ATTEMPTS:
                    raise
            else:
                self._servers.append(server)
                return server
        raise AssertionError("unreachable")

    def started_count(self) -> int:
        """How many servers this factory has started so far (a mark for `stop_started_since`)."""
        return len(self._servers)

    def stop_started_since(self, mark: int) -> None:
        """Stop the servers started after `started_count()` returned `mark`, newest first."""
        for server in reversed(self._servers[mark:]):
            server.stop()

    def stop_all(self) -> None:
        self.stop_started_since(0)

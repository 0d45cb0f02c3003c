"""Engine metrics of a simulated fleet, served over HTTP so that a real Prometheus can scrape it.

Called by `tokenscale simulate --serve-metrics PORT` and by the tests. Two parts:

- `LiveFleet`: one `Fleet` run in wall-clock time × `speedup` on a background thread, with Poisson
  arrivals drawn as time goes on at a rate that can change while it runs.
- `MetricsServer`: a threading HTTP server with `GET /metrics/<role>` (the exposition
  `sim.engine_metrics.render` writes), a small control API (`POST /control`, `GET /control`) and
  `GET /truth`, the ground truth from per-request records (`sim.truth`).

Latencies are simulated seconds. With `speedup` s, a counter grows s times faster per wall second
than per simulated second, so a PromQL `rate()` reads s × the simulated rate.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast
from urllib.parse import parse_qs, urlsplit

import numpy as np
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tokenscale.api import Role
from tokenscale.sim.engine_metrics import WORKER_ENGINES, ExportRole, WorkerEngine, render
from tokenscale.sim.fleet import Fleet, FleetConfig
from tokenscale.sim.snapshot import FleetSnapshot
from tokenscale.sim.truth import Truth, ground_truth
from tokenscale.sim.workload import LengthDistribution, make_workload

log = logging.getLogger(__name__)

# The synthetic generator's default lengths (`sim.workload.synthetic_workload`).
DEFAULT_ISL = LengthDistribution(1000.0, 1.5, 16, 16384)
DEFAULT_OSL = LengthDistribution(250.0, 1.0, 1, 4096)


# ------------------------------------------------------------------ live fleet


@dataclass(frozen=True)
class LiveState:
    """The control state of a `LiveFleet` at simulated time `time_s`."""

    time_s: float
    speedup: float
    rate_per_s: float
    replicas: Mapping[Role, int]  # starting + ready
    ready: Mapping[Role, int]

    def as_json(self) -> dict[str, object]:
        return {
            "time_s": self.time_s,
            "speedup": self.speedup,
            "rate_per_s": self.rate_per_s,
            "replicas": dict(self.replicas),
            "ready": dict(self.ready),
        }


class LiveFleet:
    """One `Fleet` run in wall-clock time × `speedup`, with Poisson arrivals drawn as it goes.

    Simulated time is (clock() − clock() at construction) × speedup. Every public call first brings
    the fleet up to that time: it draws the arrivals of the elapsed interval, a Poisson process at the
    rate in force (N ~ Poisson(rate·Δt), times uniform in the interval; lengths from `isl`/`osl`), and
    runs the fleet there. `start()` adds a thread that does so every `tick_s` wall seconds, so the
    fleet keeps up between calls; after `stop()` the fleet stands still. All public methods are
    thread-safe. Given a seed, the same sequence of simulated times gives the same run (arrivals and
    cold-start jitter draw from separate streams of the seed).
    """

    def __init__(
        self,
        config: FleetConfig,
        rate_per_s: float,
        *,
        speedup: float = 1.0,
        seed: int = 0,
        isl: LengthDistribution = DEFAULT_ISL,
        osl: LengthDistribution = DEFAULT_OSL,
        tick_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_rate(rate_per_s)
        if not (speedup > 0.0 and math.isfinite(speedup)):
            raise ValueError(f"speedup must be positive and finite, got {speedup}")
        if not tick_s > 0.0:
            raise ValueError(f"tick_s must be positive, got {tick_s}")
        fleet_seed, arrival_seed = np.random.SeedSequence(seed).spawn(2)
        empty = make_workload("live", np.empty(0), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
        self._fleet = Fleet(empty, config, np.random.default_rng(fleet_seed))
        self._rng = np.random.default_rng(arrival_seed)
        self._rate_per_s = rate_per_s
        self._speedup = speedup
        self._isl = isl
        self._osl = osl
        self._tick_s = tick_s
        self._clock = clock
        self._origin = clock()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    @property
    def roles(self) -> tuple[Role, ...]:
        return tuple(self._fleet.config.pools)

    def start(self) -> LiveFleet:
        """Start the thread that advances the fleet every `tick_s`; returns self."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("a LiveFleet starts once")
        self._thread = threading.Thread(target=self._run, name="tokenscale-live-fleet")
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop advancing and join the thread (idempotent)."""
        with self._lock:
            self._stopped = True
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"the live-fleet thread did not stop within {timeout_s} s")

    def __enter__(self) -> LiveFleet:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def set_rate(self, rate_per_s: float) -> None:
        """Arrivals per simulated second from now on (the elapsed time keeps the old rate)."""
        _check_rate(rate_per_s)
        with self._lock:
            self._sync()
            self._rate_per_s = rate_per_s

    def set_replicas(self, role: Role, n: int) -> None:
        """Scale `role` to `n` replicas now (as `Fleet.set_replicas`)."""
        with self._lock:
            self._sync()
            self._fleet.set_replicas(role, n, self._fleet.now_s)

    def snapshot(self) -> FleetSnapshot:
        """The fleet's metrics now."""
        with self._lock:
            self._sync()
            return self._fleet.snapshot(self._fleet.now_s)

    def state(self) -> LiveState:
        with self._lock:
            self._sync()
            return self._state()

    def truth(self, window_s: float) -> Truth:
        """Ground truth over the last `window_s` simulated seconds (from 0 if the run is shorter)."""
        if not (window_s > 0.0 and math.isfinite(window_s)):
            raise ValueError(f"window_s must be positive and finite, got {window_s}")
        with self._lock:
            self._sync()
            now = self._fleet.now_s
            records = self._fleet.records()
        return ground_truth(records, max(now - window_s, 0.0), now)

    # The lock is held by the callers of the methods below.

    def _state(self) -> LiveState:
        snap = self._fleet.snapshot(self._fleet.now_s)
        return LiveState(
            time_s=snap.time_s,
            speedup=self._speedup,
            rate_per_s=self._rate_per_s,
            replicas={r: p.replicas_current for r, p in snap.pools.items()},
            ready={r: p.replicas_ready for r, p in snap.pools.items()},
        )

    def _sync(self) -> None:
        if self._stopped:
            return
        now = self._fleet.now_s
        t = (self._clock() - self._origin) * self._speedup
        if not t > now:
            return
        n = int(self._rng.poisson(self._rate_per_s * (t - now)))
        arrivals = np.sort(now + self._rng.random(n) * (t - now))
        self._fleet.append_arrivals(arrivals, self._isl.sample(self._rng, n), self._osl.sample(self._rng, n))
        self._fleet.run_until(t)

    def _run(self) -> None:
        while not self._stopping.wait(self._tick_s):
            with self._lock:
                self._sync()


def _check_rate(rate_per_s: float) -> None:
    if not (rate_per_s >= 0.0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be finite and ≥ 0, got {rate_per_s}")


# ------------------------------------------------------------------ HTTP server


@dataclass(frozen=True)
class Control:
    """A parsed `POST /control` body: a new rate and/or replica counts."""

    rate_per_s: float | None
    replicas: Mapping[Role, int]


def parse_control(body: bytes, roles: tuple[Role, ...]) -> Control:
    """Parse `{"rate_per_s": float?, "replicas": {role: int}?}`; ValueError naming the bad field."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"body is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    unknown = set(data) - {"rate_per_s", "replicas"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; expected rate_per_s and/or replicas")
    rate = data.get("rate_per_s")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ValueError("rate_per_s must be a number")
        _check_rate(float(rate))
    raw = data.get("replicas", {})
    if not isinstance(raw, dict):
        raise ValueError("replicas must be an object of role: count")
    replicas: dict[Role, int] = {}
    for role, n in raw.items():
        if role not in roles:
            raise ValueError(f"replicas: no {role!r} pool in this fleet (pools: {', '.join(roles)})")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"replicas.{role} must be an integer ≥ 0")
        replicas[cast(Role, role)] = n
    return Control(None if rate is None else float(rate), replicas)


class _Server(ThreadingHTTPServer):
    # Join request threads on close (HTTP/1.0: a handler ends with its one request).
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], app: MetricsServer) -> None:
        self.app = app
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    timeout = 10.0  # seconds to read a request
    _MAX_BODY = 65536

    def do_GET(self) -> None:
        app = cast(_Server, self.server).app
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "metrics":
            body = app.metrics(parts[1])
            if body is None:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no role {parts[1]!r}; try {', '.join(app.roles)}"})
            else:
                self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, body)
        elif url.path == "/truth":
            query = parse_qs(url.query)
            try:
                window_s = float(query.get("window_s", ["60"])[-1])
                truth = app.live.truth(window_s)
            except ValueError as err:
                self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
                return
            self._send_json(HTTPStatus.OK, truth.as_json())
        elif url.path == "/control":
            self._send_json(HTTPStatus.OK, app.live.state().as_json())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path {url.path}"})

    def do_POST(self) -> None:
        app = cast(_Server, self.server).app
        if urlsplit(self.path).path != "/control":
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > self._MAX_BODY:
            self._send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            return
        try:
            control = parse_control(self.rfile.read(length), app.live.roles)
        except ValueError as err:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            return
        self._send_json(HTTPStatus.OK, app.control(control).as_json())

    def _send_json(self, status: HTTPStatus, payload: Mapping[str, object]) -> None:
        self._send(status, "application/json", json.dumps(payload).encode())

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            log.debug("%s went away before the answer (a scraper stopping)", self.address_string())

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class MetricsServer:
    """HTTP endpoints over a `LiveFleet`, for a real Prometheus and for tests and demos.

    - `GET /metrics/<role>`: `render` of the pool `role` with `engine`, or of the Dynamo frontend
      for role "frontend"; 404 for a role the fleet does not have.
    - `POST /control` with `{"rate_per_s": float?, "replicas": {"decode": 3, ...}?}`: applies it and
      answers 200 with the new `LiveState` as JSON (400 naming the bad field); `GET /control` reads it.
    - `GET /truth?window_s=60`: `LiveFleet.truth(window_s)` as JSON (None → null).

    The socket is bound on construction (port 0 → an ephemeral port, see `port`); `start()` serves
    on a thread; `close()` stops it and joins every thread. Use it as a context manager.
    """

    def __init__(
        self,
        live: LiveFleet,
        *,
        model: str,
        engine: WorkerEngine = "vllm",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if engine not in WORKER_ENGINES:
            raise ValueError(
                f"pools run {', '.join(WORKER_ENGINES)}, not {engine!r} (Dynamo's frontend is /metrics/frontend)"
            )
        self.live = live
        self.model = model
        self.engine: WorkerEngine = engine
        self.roles: tuple[ExportRole, ...] = (*live.roles, "frontend")
        self._httpd = _Server((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._httpd.server_address[0])
        return f"http://{host}:{self.port}"

    def metrics(self, role: str) -> bytes | None:
        """The exposition for `role`, or None if the fleet has no such role."""
        if role == "frontend":
            return render(self.live.snapshot(), "frontend", "dynamo", self.model)
        for pool in self.live.roles:
            if pool == role:
                return render(self.live.snapshot(), pool, self.engine, self.model)
        return None

    def control(self, control: Control) -> LiveState:
        if control.rate_per_s is not None:
            self.live.set_rate(control.rate_per_s)
        for role, n in control.replicas.items():
            self.live.set_replicas(role, n)
        return self.live.state()

    def start(self) -> MetricsServer:
        if self._thread is not None:
            raise RuntimeError("a MetricsServer starts once")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="tokenscale-metrics-server"
        )
        self._thread.start()
        return self

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop serving, close the socket and join the server's threads."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"the metrics server did not stop within {timeout_s} s")
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

"""An asyncio front to Prometheus' instant-query API, with timeouts, auth and TLS.

Called by `metrics.observe` (and through it by the controller and `tokenscale plan --prometheus`).
The HTTP client is the session prometheus-api-client's `PrometheusConnect` configures (auth, TLS,
no retries); it is synchronous: each query
runs on a worker thread of this client's own pool and is awaited with a deadline, so a slow or
dead Prometheus never blocks the event loop and never starves other pools' queries of the
default executor. Failures are raised as `PrometheusError` with a `kind` the caller turns into a
data-quality note: unreachable, timeout, http-status, bad-response (garbage), query-error.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import requests
from prometheus_api_client import PrometheusConnect
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

ErrorKind = Literal["unreachable", "timeout", "http-status", "bad-response", "query-error"]


# A pool without spec.metrics.prometheus.url under an operator without a default: every query fails with this.
NO_URL_MESSAGE = (
    "no Prometheus URL: set spec.metrics.prometheus.url, or the operator's default "
    "(tokenscale run --default-prometheus-url; the chart's value prometheus.url)"
)


class PrometheusError(Exception):
    """A query that produced no usable answer; `kind` says why."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


@dataclass(frozen=True)
class Sample:
    """One series of an instant-vector result: its labels and value (NaN kept as NaN)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Credentials:
    """Resolved secrets for one Prometheus (the operator reads them from Secrets)."""

    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_pem: str | None = None
    insecure_skip_verify: bool = False


@dataclass
class PrometheusClient:
    """Queries one Prometheus. Create once per (URL, credentials) and reuse; `close()` when done."""

    url: str
    timeout_s: float = 10.0
    credentials: Credentials = field(default_factory=Credentials)
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        creds = self.credentials
        session = requests.Session()
        self._ca_dir: tempfile.TemporaryDirectory[str] | None = None
        if creds.insecure_skip_verify:
            session.verify = False
        elif creds.ca_pem:
            # requests takes a CA bundle as a path; keep it in a private temporary directory.
            self._ca_dir = tempfile.TemporaryDirectory(prefix="tokenscale-ca-")
            path = os.path.join(self._ca_dir.name, "ca.pem")
            with open(path, "w", encoding="utf-8") as f:
                f.write(creds.ca_pem)
            session.verify = path
        headers = {"Authorization": f"Bearer {creds.bearer_token}"} if creds.bearer_token else None
        auth = (creds.username, creds.password or "") if creds.username else None
        no_retry = Retry(total=0, read=False)  # read=False: a read timeout stays a Timeout (requests default)
        self._connect = PrometheusConnect(
            url=self.url.rstrip("/"),
            headers=headers,
            auth=auth,
            session=session,
            # No retries inside one interval: the next interval is the retry, and a dead
            # Prometheus must fail fast rather than back off while holding a worker thread.
            retry=no_retry,
            disable_ssl=creds.insecure_skip_verify,
        )
        # The session is ours (given to PrometheusConnect, which mounts its adapter on it), so it is
        # used through our own reference, never the library's private `_session`. One connection per
        # worker thread (the library's adapter keeps requests' default of 10).
        self._session = session
        session.mount(self._connect.url, HTTPAdapter(max_retries=no_retry, pool_maxsize=self.max_concurrency))
        self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="prometheus")

    async def query(self, promql: str, time_s: float | None = None) -> list[Sample]:
        """Evaluate an instant query (at `time_s`, Unix seconds, or now) and return its samples.

        Scalars come back as one sample with no labels. Raises `PrometheusError`.
        """
        if not self.url:
            raise PrometheusError("unreachable", NO_URL_MESSAGE)
        params = {} if time_s is None else {"time": f"{time_s:.3f}"}
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._query_blocking, promql, params)
        try:
            result = await asyncio.wait_for(future, timeout=self.timeout_s + 1.0)
        except TimeoutError:
            raise PrometheusError("timeout", f"no answer within {self.timeout_s:g}s") from None
        return _parse(result)

    def _query_blocking(self, promql: str, params: dict[str, str]) -> Any:
        # The query goes in a form-encoded POST body, which Prometheus' HTTP API accepts for long
        # queries (docs: "Instant queries"): one pool's batched query is ~5 KB, ~7 KB URL-encoded,
        # near the 8 KB request-line limit of common proxies in front of Prometheus, and encoding
        # it into a URL cost the operator ~2 ms a cycle. `PrometheusConnect.custom_query` puts the
        # parameters in the URL whatever its method, so the POST uses the session it configured.
        connect = self._connect
        try:
            response = self._session.post(
                f"{connect.url}/api/v1/query",
                data={"query": promql, **params},
                headers=connect.headers,
                auth=connect.auth,
                # Passed again: requests lets REQUESTS_CA_BUNDLE override the session's verify.
                verify=self._session.verify,
                timeout=self.timeout_s,
            )
        except requests.Timeout:
            raise PrometheusError("timeout", f"no answer within {self.timeout_s:g}s") from None
        except requests.ConnectionError as err:
            raise PrometheusError("unreachable", f"cannot connect to {self.url}: {_root_cause(err)}") from None
        if response.status_code != 200:
            raise _status_error(response.status_code, response.content)
        try:
            return response.json()["data"]["result"]
        except ValueError as err:  # the body was not JSON
            raise PrometheusError("bad-response", f"{self.url} answered something that is not JSON: {err}") from None
        except (KeyError, TypeError) as err:
            raise PrometheusError("bad-response", f"{self.url} answered JSON without data.result: {err}") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()
        if self._ca_dir is not None:
            self._ca_dir.cleanup()


def _status_error(status: int, content: bytes) -> PrometheusError:
    # One line, and short: an HTML error page would otherwise fill the status and the terminal.
    text = " ".join(content.decode("utf-8", errors="replace").split())[:200]
    if status in (400, 422):  # bad_data / execution error: the answer's "error" says what
        return PrometheusError("query-error", f"Prometheus rejected the query (HTTP {status}): {text}")
    return PrometheusError("http-status", f"Prometheus answered HTTP {status}: {text}")


def _root_cause(err: BaseException) -> str:
    while err.__context__ is not None and err.__context__ is not err:
        err = err.__context__
    return str(err).split(": ", 1)[-1][:200]


def _parse(result: Any) -> list[Sample]:
    """Samples from `data.result` of a vector or scalar answer."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return [Sample({}, _number(result[1]))]  # resultType scalar
    if not isinstance(result, list):
        raise PrometheusError("bad-response", f"unexpected result type {type(result).__name__}")
    out = []
    for item in result:
        try:
            labels = {str(k): str(v) for k, v in dict(item.get("metric") or {}).items()}
            value = item["value"][1]
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            raise PrometheusError("bad-response", f"unexpected sample {str(item)[:120]}") from None
        out.append(Sample(labels, _number(value)))
    return out


def _number(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise PrometheusError("bad-response", f"sample value {text!r} is not a number") from None
    return value

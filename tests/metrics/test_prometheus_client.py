"""The Prometheus client's auth and TLS: bearer token, basic auth, a private CA, and skip-verify only when asked.

The server is a local HTTPS endpoint with a certificate from a CA made by `openssl` for the test;
it answers Prometheus' query API only with the expected Authorization header (401 otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.textserver import TextServer

from tokenscale.metrics.prometheus import Credentials, PrometheusClient, PrometheusError

ANSWER = json.dumps(
    {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "42"]}]}}
).encode()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=tokenscale test CA", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d)  # fmt: skip
    return d


@pytest.fixture
def https_prometheus(pki: Path) -> Iterator[TextServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    accepted = {"Bearer s3cret", "Basic " + base64.b64encode(b"reader:pa:ss").decode()}

    def respond(path: str) -> tuple[int, str, bytes]:
        if server.last_headers.get("Authorization") not in accepted:
            return 401, "text/plain", b"Unauthorized"
        return 200, "application/json", ANSWER

    server = TextServer(respond, tls=context)
    with server:
        yield server


def _query(url: str, credentials: Credentials) -> float:
    client = PrometheusClient(url, timeout_s=5.0, credentials=credentials)
    try:
        return asyncio.run(client.query("vector(42)"))[0].value
    finally:
        client.close()


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param({"bearer_token": "s3cret"}, id="bearer-token"),
        pytest.param({"username": "reader", "password": "pa:ss"}, id="basic-auth"),
    ],
)
def test_authenticated_query_over_tls_with_a_private_ca(
    https_prometheus: TextServer, pki: Path, credentials: dict[str, str]
) -> None:
    ca = (pki / "ca.pem").read_text()
    assert _query(https_prometheus.url, Credentials(ca_pem=ca, **credentials)) == 42.0


@pytest.mark.parametrize(
    ("credentials", "kind", "message"),
    [
        pytest.param({"bearer_token": "wrong"}, "http-status", "401", id="wrong-token"),
        pytest.param({}, "http-status", "401", id="no-credentials"),
    ],
)
def test_rejected_credentials_are_an_http_status(
    https_prometheus: TextServer, pki: Path, credentials: dict[str, str], kind: str, message: str
) -> None:
    ca = (pki / "ca.pem").read_text()
    with pytest.raises(PrometheusError) as err:
        _query(https_prometheus.url, Credentials(ca_pem=ca, **credentials))
    assert err.value.kind == kind and message in str(err.value)


def test_an_unknown_ca_is_refused_unless_verification_is_skipped(https_prometheus: TextServer) -> None:
    with pytest.raises(PrometheusError) as err:
        _query(https_prometheus.url, Credentials(bearer_token="s3cret"))
    assert err.value.kind == "unreachable" and "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    assert _query(https_prometheus.url, Credentials(bearer_token="s3cret", insecure_skip_verify=True)) == 42.0


def test_a_long_query_travels_in_a_form_body_past_a_proxys_request_line_limit() -> None:
    """Proxies in front of Prometheus commonly refuse request lines over 8 KB (nginx's default
    header buffers); a pool's batched query is ~7 KB URL-encoded, so the client POSTs it as a form."""
    long_query = " or ".join(
        f'vector({i}) * on() group_left() up{{job="pool-{i:04d}", model="m\\"x"}}' for i in range(150)
    )
    assert len(long_query) > 10_000

    def respond(path: str) -> tuple[int, str, bytes]:
        if len(server.last_request_line) > 8192:
            return 414, "text/plain", b"Request-URI Too Large"
        received = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["query"][0]
        result = [{"metric": {}, "value": [1, str(len(received))]}]
        answer = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return 200, "application/json", json.dumps(answer).encode()

    server = TextServer(respond)
    with server:
        client = PrometheusClient(server.url, timeout_s=5.0)
        try:
            samples = asyncio.run(client.query(long_query, 1700000000.0))
        finally:
            client.close()
    assert samples[0].value == len(long_query)  # the whole query arrived, unaltered in length
    assert server.last_request_line.startswith("POST /api/v1/query ")


def test_a_pool_with_no_url_and_no_default_reads_unreachable_with_how_to_set_one() -> None:
    # spec.metrics.prometheus.url unset and `tokenscale run` without --default-prometheus-url: the
    # reconcile cycle builds a client for "" and every query fails like an unreachable Prometheus.
    client = PrometheusClient("")
    try:
        with pytest.raises(PrometheusError) as err:
            asyncio.run(client.query("up"))
    finally:
        client.close()
    assert err.value.kind == "unreachable"
    assert "set spec.metrics.prometheus.url" in str(err.value) and "prometheus.url" in str(err.value)

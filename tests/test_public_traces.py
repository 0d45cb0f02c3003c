"""Named public traces: fetched once into the user cache, verified, explained (issue 14).

The published files are served from a loopback HTTP server (this machine cannot reach GitHub): the
test bed keeps byte-identical copies in ../shared/traces/, which tests may read. The server counts
requests, so "downloaded once" is observed, not assumed.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tokenscale import public_traces

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"
LOCAL_COPY = {
    "AzureLLMInferenceTrace_conv.csv": "azure-2023-conv.csv",
    "synthetic_trace.jsonl": "mooncake-synthetic.jsonl",
}


@dataclass
class TraceServer:
    url: str
    requests: Counter[str] = field(default_factory=Counter)
    corrupt: set[str] = field(default_factory=set)  # file names served with one byte changed


@pytest.fixture
def server() -> Iterator[TraceServer]:
    state = TraceServer(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            name = self.path.rsplit("/", 1)[-1]
            state.requests[name] += 1
            if name not in LOCAL_COPY:
                self.send_error(404)
                return
            body = (SHARED / LOCAL_COPY[name]).read_bytes()
            if name in state.corrupt:
                body = body[:100] + bytes([body[100] ^ 1]) + body[101:]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/published"
    try:
        yield state
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


@pytest.mark.parametrize("name", list(public_traces.CATALOG))
def test_a_named_trace_is_downloaded_once_verified_and_then_read_from_the_cache(
    server: TraceServer, tmp_path: Path, name: str
) -> None:
    trace = public_traces.CATALOG[name]
    lines: list[str] = []
    first = public_traces.fetch(name, tmp_path / "cache", server.url, progress=lines.append)
    assert first.downloaded and first.path == tmp_path / "cache" / trace.file_name
    assert first.path.read_bytes() == (SHARED / LOCAL_COPY[trace.file_name]).read_bytes()
    assert lines == [
        f"downloading trace {name} from {server.url}/{trace.file_name} ({trace.size_bytes / 1e6:.1f} MB) …"
    ]
    second = public_traces.fetch(name, tmp_path / "cache", server.url)
    assert not second.downloaded and server.requests[trace.file_name] == 1
    assert trace.license in second.provenance() and trace.citation in second.provenance()
    assert os.listdir(tmp_path / "cache") == [trace.file_name], "no partial file left behind"


def test_the_catalog_pins_published_urls_to_a_commit() -> None:
    for trace in public_traces.CATALOG.values():
        assert trace.url.startswith("https://raw.githubusercontent.com/"), trace.url
        commit = trace.url.split("/")[5]
        assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit), trace.url
        assert trace.url.endswith("/" + trace.file_name)


def test_a_checksum_mismatch_is_one_line_and_caches_nothing(server: TraceServer, tmp_path: Path) -> None:
    server.corrupt.add("AzureLLMInferenceTrace_conv.csv")
    with pytest.raises(public_traces.TraceFetchError) as err:
        public_traces.fetch("azure-conv-2023", tmp_path, server.url)
    message = str(err.value)
    assert message.startswith(f"{server.url}/AzureLLMInferenceTrace_conv.csv: checksum mismatch: got sha256 ")
    assert "nothing was cached" in message and "\n" not in message
    assert os.listdir(tmp_path) == []


def test_a_corrupted_cache_is_downloaded_again(server: TraceServer, tmp_path: Path) -> None:
    (tmp_path / "synthetic_trace.jsonl").write_text("{}\n")
    fetched = public_traces.fetch("mooncake-synthetic", tmp_path, server.url)
    assert fetched.downloaded and server.requests["synthetic_trace.jsonl"] == 1


def test_cache_dir_follows_xdg_cache_home() -> None:
    assert public_traces.cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/tokenscale/traces")
    assert public_traces.cache_dir({"HOME": "/home/u"}) == Path("/home/u/.cache/tokenscale/traces")


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokenscale.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, **env})  # fmt: skip


def test_simulate_trace_by_name_says_where_it_came_from(server: TraceServer, tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), public_traces.BASE_URL_ENV: server.url}
    out = tmp_path / "out"
    result = run("simulate", "-f", "examples/vllm-aggregated-8b.yaml", "--trace", "azure-conv-2023",
                 "--policy", "static", "--out-dir", str(out), env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    cached = tmp_path / "xdg" / "tokenscale" / "traces" / "AzureLLMInferenceTrace_conv.csv"
    assert f"from {server.url}/AzureLLMInferenceTrace_conv.csv to {cached} (sha256 verified)" in result.stderr
    assert "License: CC-BY 4.0" in result.stderr and "Splitwise" in result.stderr
    workload = json.loads((out / "summary.json").read_text())["workload"]
    assert workload["source"] == "azure-conv-2023" and workload["requests"] == 19_366
    assert workload["license"].startswith("CC-BY 4.0")


def test_simulate_names_the_catalog_for_an_unknown_name_and_fails_downloads_in_one_line(tmp_path: Path) -> None:
    unknown = run("simulate", "-f", "examples/vllm-aggregated-8b.yaml", "--trace", "azure-2099", env={})
    assert unknown.returncode == 2
    assert unknown.stderr == (
        "error: --trace: azure-2099 is neither a file nor a named trace (azure-conv-2023, mooncake-synthetic)\n"
    )
    env = {"XDG_CACHE_HOME": str(tmp_path), public_traces.BASE_URL_ENV: "http://127.0.0.1:9/nothing"}
    down = run("simulate", "-f", "examples/vllm-aggregated-8b.yaml", "--trace", "mooncake-synthetic", env=env)
    assert down.returncode == 2 and "Traceback" not in down.stderr
    assert down.stderr.splitlines()[-1].startswith(
        "error: --trace mooncake-synthetic: cannot download http://127.0.0.1:9/nothing/synthetic_trace.jsonl: "
    )

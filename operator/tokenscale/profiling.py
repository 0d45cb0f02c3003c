"""Measure a live OpenAI-compatible engine for `tokenscale profile`: prefill and decode points.

The points are what `tokenscale fit` reads from a CSV (`planner.perf.fit_prefill` / `fit_decode`),
measured in minutes from outside the engine, one replica, nothing else running on it:

- prefill: one request at a time with `max_tokens: 1`, for prompt lengths on a geometric grid up to
  `max_prompt_tokens`; the time to the first streamed token, median of `repeats`, is s(ISL) plus the
  round trip (a few ms on loopback, part of the TTFT the engine's users see, so it stays in). The
  requests go back to back, so this is a busy engine's prefill: on the CPU test bed a prompt that
  found the engine idle for 0.2–1 s took 3–6 ms longer (tests/test_profiling.py).
- decode: `batch` streams started together with the same prompt length, each generating
  `output_tokens`, then again each generating `lead_output_tokens`. Both runs share the prompts'
  prefill and every step before their `lead_output_tokens`-th token; the longer one adds
  `output_tokens − lead_output_tokens` steps of all `batch` sequences decoding together. The step
  is the difference of the runs' end times (a stream's last token − its send, median over streams)
  over that difference of tokens. Only the ends are read: an API server may hold tokens back and
  flush them together (measured on vLLM's CPU build: a whole 64-token stream delivered within
  1 ms, its first token 250 ms late), which makes the gaps between streamed chunks, or a span
  from a late first token, read the step several times too short; a last token cannot arrive
  before it is generated. The point is (batch, mean context = prompt + the mean of the two output
  lengths, the median of `repeats` differences). Two prompt lengths per batch size separate the
  per-sequence cost β from the per-context-token cost γ (`perf.fit_decode` needs contexts that
  vary independently of batch).
- every point's `repeats` are taken in rounds over the whole grid, not back to back, so a slow
  spell of the machine or the engine (seen here: the batch-1 step 4.2–8.4 ms within a minute on a
  shared 2-core machine) lands on all points alike instead of bending the fit through a few.
- warm-up first: every prefill length and the largest decode batch once, untimed, so the first
  request of a shape (and an engine's first work after start) is not a point. On vLLM's CPU build,
  on a shared 2-core machine, the first profile after start timed a 2,048-token prompt at 136 ms
  and a profile two minutes later at 80 ms.

Prompts are token ids (`"prompt": [ids]`) with `ignore_eos`, so no tokenizer is needed and every
request generates exactly `max_tokens` tokens; they are drawn afresh on every run, so an engine's
prefix cache never holds one (a cached prompt would prefill in a few ms). Engines that reject
token-id prompts (or do not stream) are not supported. Not for a replica that serves traffic: the
points would include it.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


class ProfileError(RuntimeError):
    """The endpoint could not be measured (unreachable, an HTTP error, or an answer without tokens)."""


@dataclass(frozen=True)
class Endpoint:
    """Where to send completions: `http://host:port` and the model name the server serves."""

    url: str
    model: str
    timeout_s: float = 300.0

    def _connection(self) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProfileError(f"must be http(s)://host:port, got {self.url!r}")
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return cls(parts.hostname, parts.port, timeout=self.timeout_s)

    def stream(self, prompt: Sequence[int], max_tokens: int) -> list[tuple[float, int]]:
        """One streamed completion: (monotonic time, tokens) for each chunk that carried tokens.

        The first entry's time is when the request was sent, with 0 tokens.
        """
        body = json.dumps(
            {"model": self.model, "prompt": list(prompt), "max_tokens": max_tokens, "ignore_eos": True,
             "stream": True, "temperature": 0.0, "return_token_ids": True}
        ).encode()  # fmt: skip
        conn = self._connection()
        events: list[tuple[float, int]] = [(time.monotonic(), 0)]
        try:
            conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                raise ProfileError(f"{self.url}/v1/completions answered {response.status}: {response.read()[:200]!r}")
            for raw in response:
                line = raw.strip()
                if not line.startswith(b"data:") or line == b"data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                n = sum(_tokens_in(choice) for choice in chunk.get("choices", ()))
                if n:
                    events.append((time.monotonic(), n))
        except OSError as err:
            raise ProfileError(f"cannot reach {self.url}: {err}") from None
        finally:
            conn.close()
        if len(events) == 1:
            raise ProfileError(f"{self.url} streamed no tokens for a {len(prompt)}-token prompt")
        return events


def _tokens_in(choice: dict[str, object]) -> int:
    """Tokens in one streamed choice: its token ids when the server returns them (vLLM's
    `return_token_ids`), else one per chunk that carries text (an engine without a tokenizer sends "")."""
    ids = choice.get("token_ids")
    if isinstance(ids, list):
        return len(ids)
    return 1 if isinstance(choice.get("text"), str) else 0


@dataclass(frozen=True)
class Plan:
    """What to measure. The defaults take about a minute on a small model."""

    max_prompt_tokens: int = 2048
    prefill_points: int = 9
    repeats: int = 5
    batches: tuple[int, ...] = (1, 2, 4, 8, 16)
    decode_prompts: tuple[int, ...] = (64, 512)
    output_tokens: int = 64
    lead_output_tokens: int = 8  # the shorter run of each decode point (module docstring)

    def prefill_lengths(self) -> list[int]:
        grid = np.geomspace(16, self.max_prompt_tokens, self.prefill_points)
        return sorted({int(round(x)) for x in grid})


@dataclass
class Points:
    """Measured points, the columns of `tokenscale fit`'s CSV."""

    prefill: list[tuple[int, float]] = field(default_factory=list)  # (isl tokens, seconds)
    decode: list[tuple[int, float, float]] = field(default_factory=list)  # (batch, mean context, seconds)

    def csv(self) -> str:
        rows = ["phase,isl_tokens,batch,context_tokens,seconds"]
        rows += [f"prefill,{isl},,,{s:.6g}" for isl, s in self.prefill]
        rows += [f"decode,,{n},{ctx:g},{s:.6g}" for n, ctx, s in self.decode]
        return "\n".join(rows) + "\n"


def _prompt(rng: np.random.Generator, tokens: int) -> list[int]:
    return [int(x) for x in rng.integers(100, 30_000, size=tokens)]


def measure(endpoint: Endpoint, plan: Plan, progress: Callable[[str], None] | None = None) -> Points:
    """Measure prefill and decode points on `endpoint` (see the module docstring)."""
    say = progress or (lambda _: None)
    rng = np.random.default_rng()  # fresh prompts every run: nothing in a prefix cache
    points = Points()
    for isl in plan.prefill_lengths():  # warm-up (module docstring), untimed
        endpoint.stream(_prompt(rng, isl), 1)
    _decode_ends(endpoint, rng, max(plan.batches), min(plan.decode_prompts), plan.lead_output_tokens)
    # Rounds over the whole grid: a point's repeats are spread over the measurement (module docstring).
    lengths = plan.prefill_lengths()
    prefill: dict[int, list[float]] = {isl: [] for isl in lengths}
    for _ in range(plan.repeats):
        for isl in lengths:
            events = endpoint.stream(_prompt(rng, isl), 1)
            prefill[isl].append(events[1][0] - events[0][0])
    for isl in lengths:
        points.prefill.append((isl, statistics.median(prefill[isl])))
        say(f"prefill {isl} tokens: {points.prefill[-1][1] * 1000:.1f} ms")
    long, lead = plan.output_tokens, plan.lead_output_tokens
    grid = [(prompt_tokens, batch) for prompt_tokens in plan.decode_prompts for batch in plan.batches]
    decode: dict[tuple[int, int], list[float]] = {point: [] for point in grid}
    for _ in range(plan.repeats):
        for prompt_tokens, batch in grid:
            end_long = _decode_ends(endpoint, rng, batch, prompt_tokens, long)
            end_lead = _decode_ends(endpoint, rng, batch, prompt_tokens, lead)
            decode[prompt_tokens, batch].append((end_long - end_lead) / (long - lead))
    for prompt_tokens, batch in grid:
        step = statistics.median(decode[prompt_tokens, batch])
        if step <= 0.0:
            raise ProfileError(f"decode at batch {batch}: {long} tokens took no longer than {lead}")
        points.decode.append((batch, prompt_tokens + (long + lead) / 2.0, step))
        say(f"decode batch {batch}, prompt {prompt_tokens}: {step * 1000:.2f} ms per step")
    return points


def _decode_ends(endpoint: Endpoint, rng: np.random.Generator, batch: int, prompt_tokens: int, out: int) -> float:
    """Seconds from send to last token of `batch` streams started together (median over the streams)."""
    results: list[list[tuple[float, int]] | None] = [None] * batch
    errors: list[ProfileError] = []

    def run(i: int, prompt: list[int]) -> None:
        try:
            results[i] = endpoint.stream(prompt, out)
        except ProfileError as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, _prompt(rng, prompt_tokens)), daemon=True) for i in range(batch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=endpoint.timeout_s)
    if errors:
        raise errors[0]
    streams = [r for r in results if r is not None]
    if len(streams) != batch:
        raise ProfileError(f"{batch - len(streams)} of {batch} decode streams did not finish")
    return statistics.median(events[-1][0] - events[0][0] for events in streams)

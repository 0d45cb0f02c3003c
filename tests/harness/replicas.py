"""A small replica for tests: round coefficients whose timings a test can work out by hand.

Prefill s(ISL) = 0.01 + 6e-5·ISL + 1e-9·ISL² seconds (71 ms at 1,000 tokens); decode step
τ(n, L) = 8 ms + n·(50 µs + 1e-8·L); 400k tokens of KV cache, 256 sequences a step, 1 µs of KV
transfer per token (`tests/sim/test_fleet.py` spells the same replica out term by term).
"""

from __future__ import annotations

from tokenscale.planner.perf import DecodeModel, PrefillModel, ReplicaPerformance

SMALL_REPLICA = ReplicaPerformance(
    prefill=PrefillModel(0.01, 6e-5, 1e-9),
    decode=DecodeModel(0.008, 5e-5, 1e-8),
    kv_capacity_tokens=400_000,
    kv_bytes_per_token=131_072,
    max_batch=256,
    kv_transfer_s_per_token=1e-6,
)

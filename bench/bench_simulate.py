"""Benchmark: replay the Azure 2023 conversation trace (19,366 requests, 1 h) through the simulator.

Prints wall time and peak memory for one policy and for all four side by side, and the
planning-quality table. Replays the named trace azure-conv-2023 (fetched once into the user
cache and checksummed by `tokenscale simulate`; Patel et al., "Splitwise", ISCA 2024, CC-BY 4.0).
Goal (issue 4): one policy ≤ 10 s and ≤ 500 MB, all four ≤ 60 s.

    .venv/bin/python bench/bench_simulate.py [pool.yaml]
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACE = "azure-conv-2023"  # a named public trace


def run(policies: str, pool: Path, out: Path) -> tuple[float, float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokenscale.cli",
            "simulate",
            "-f",
            str(pool),
            "--trace",
            TRACE,
            "--policy",
            policies,
            "--out-dir",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak_mb, result.stdout


def main() -> None:
    pool = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples" / "vllm-aggregated-8b.yaml"
    out = Path("/tmp/tokenscale-bench")
    wall, peak, _ = run("tokenscale", pool, out / "one")
    print(f"one policy (tokenscale): {wall:.1f} s wall, peak RSS {peak:.0f} MB")
    wall, peak, table = run("tokenscale,static,hpa,dynamo", pool, out / "all")
    print(f"four policies: {wall:.1f} s wall, peak RSS {peak:.0f} MB")
    print(table)


if __name__ == "__main__":
    main()

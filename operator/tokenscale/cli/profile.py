"""`tokenscale profile`: measure a live engine (OpenAI-compatible) and write its performance profile.

Called by `tokenscale.cli.build_parser`. The measuring is `tokenscale.profiling`'s; the points are
then fitted and written as `tokenscale fit` does (`cli.fit.fit_profile`, `cli.fit.write_profile`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tokenscale.cli.errors import EXIT_OK, Subparsers, UsageError
from tokenscale.cli.fit import Points, fit_profile, profile_output_flags, write_profile
from tokenscale.cli.flags import url_flag


def add_parser(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure a live engine (OpenAI-compatible) and write its performance profile",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Measures one idle replica from outside, then fits and writes the profile as `tokenscale fit` does:
  prefill  time to the first streamed token, one request at a time, prompts of 16 … --max-prompt-tokens
  decode   time per token with 1 … --max-batch streams decoding together, two prompt lengths,
           from the streams' ends at two output lengths
Every shape runs once untimed first (warm-up).
Prompts are token ids with ignore_eos (no tokenizer needed). Progress and fit quality go to stderr.""",
    )
    p.add_argument("--url", required=True, help="the engine's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="the model name the engine serves (/v1/models)")
    p.add_argument("--max-prompt-tokens", type=int, default=2048, metavar="N", help="longest prompt (default 2048)")
    p.add_argument("--max-batch", type=int, default=16, metavar="N", help="most streams decoding at once (default 16)")
    p.add_argument("--points", metavar="CSV", help="also write the measured points, in `fit`'s CSV format")
    profile_output_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure a live engine (`profiling.measure`), then fit and write its profile like `fit`."""
    from tokenscale import profiling

    if args.max_prompt_tokens < 16:
        raise UsageError(f"--max-prompt-tokens: must be ≥ 16, got {args.max_prompt_tokens}")
    if args.max_batch < 2:
        raise UsageError(f"--max-batch: must be ≥ 2 (decode needs several batch sizes), got {args.max_batch}")
    powers = (2**k for k in range(args.max_batch.bit_length()))
    batches = tuple(sorted({*(n for n in powers if n <= args.max_batch), args.max_batch}))
    plan = profiling.Plan(
        max_prompt_tokens=args.max_prompt_tokens,
        batches=batches,
        decode_prompts=(64, max(64, min(512, args.max_prompt_tokens // 2))),
    )
    endpoint = profiling.Endpoint(url_flag("--url", args.url).rstrip("/"), args.model)
    try:
        points = profiling.measure(endpoint, plan, progress=lambda line: print(line, file=sys.stderr))
    except profiling.ProfileError as err:
        raise UsageError(f"--url: {err}") from None
    if args.points:
        try:
            Path(args.points).write_text(points.csv(), encoding="utf-8")
        except OSError as err:
            raise UsageError(f"--points: cannot write {args.points}: {err.strerror or err}") from None
    measured: Points = {
        "prefill": [[float(isl), s] for isl, s in points.prefill],
        "decode": [[float(n), ctx, s] for n, ctx, s in points.decode],
    }
    profile = fit_profile(measured, args.url, args.kv_capacity_tokens)
    write_profile(profile, f"profile {args.url} ({args.model})", args.output, args.output_file, args.configmap)
    return EXIT_OK

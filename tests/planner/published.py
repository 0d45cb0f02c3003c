"""Published serving measurements that the roofline prior is held against (issue 16).

Used by `tests/planner/test_published.py`. Each row names its source (document, version) and its
setup (engine, precision, tensor parallelism, prompt and output lengths, batch or concurrency), the
published figure, and the tolerance the prior must meet: ±15% where the setup maps exactly onto the
prior's inputs, ±25% where part of it is unknown (the row says which part). Figures are copied as
published; nothing here is computed from tokenscale's code.

Kinds and what the prior predicts for each (see `test_published.predict`):
  prefill     time to first token of one request alone (batch 1 or concurrency 1): s(ISL)
  decode      inter-token latency of one stream (τ(1, L)), or the end-to-end latency of a fixed batch
              (one prefill of the batch plus OSL − 1 decode steps)
  throughput  output tokens/s of a replica kept full (offline benchmark):
              `perf.saturated_output_tokens_per_s`
  aggregated_ttft
              median time to first token of an aggregated (chunked-prefill) replica under an open
              Poisson load of `rate_per_s`: `sizing.aggregated_sizing`'s TTFT at quantile 0.5

Sources
  TRT-v0.5   TensorRT-LLM docs/source/performance.md, "Low Latency" tables ("data is from
             TensorRT-LLM v0.5"; GitHub NVIDIA/TensorRT-LLM, commit 138f96d): batch 1, first-token
             latency measured with one output token; H100 SXM with FP8 weights and FP8 KV cache
             (`--enable_fp8 --fp8_kv_cache`), A100 SXM 80GB in FP16. Models LLaMA-2 7B and 70B.
  TRT-v1.0   TensorRT-LLM docs/source/performance/perf-overview.md (GitHub NVIDIA/TensorRT-LLM,
             commit 00f3768, the v1.0 overview with RTX Pro 6000 data): `trtllm-bench throughput`,
             PyTorch backend, every request queued at once, ModelOpt FP8 checkpoints
             (nvidia/Llama-3.1-8B-Instruct-FP8, nvidia/Llama-3.3-70B-Instruct-FP8), fixed ISL/OSL,
             KV-cache fraction 0.90–0.95 of free memory, "Total Output Throughput".
  vLLM-perf  vLLM's performance-benchmark pipeline, "Latency tests" table: 32 input tokens, 128
             output tokens, fixed batch 8, default dtype (BF16), mean end-to-end latency; models
             Llama-3.1-8B TP1 and Llama-3-70B TP4. H200 rows from buildkite.com/vllm/
             performance-benchmark build 9515; H100 rows from a run of the same suite whose GPU
             column reads "8xH100" (stored at buildkite.com/elastic/enterprise-search-ruby/builds/571,
             a mislabelled copy of the vLLM page: same test names, text and table layout); A100 rows
             from buildkite.com/vllm/performance-benchmark build 9523, GPU column "A100-SXM4-80GB".
  TRT-v0.9   The same document and tables as TRT-v0.5, as revised for TensorRT-LLM v0.9.0 ("All data
             was generated using version 0.9.0"; docs/source/performance.md of the v0.9.0 release):
             same benchmark (gptSessionBenchmark, batch 1, one output token), same FP8 weights and KV
             cache on H100 SXM.
  SGLang-0.3 sgl-project/sglang benchmark/benchmark_vllm_060/README.md ("How to reproduce the
             benchmark results for SGLang v0.3.0 compared to vLLM v0.6.0"), online tables: BF16
             Llama-3.1-8B-Instruct on 1×A100 80GB (`--enable-torch-compile`) and Llama-3.1-70B-Instruct
             on 4×H100 80GB (TP4), radix cache off, `sglang.bench_serving` on ShareGPT at a Poisson
             request rate of 4 and 8 per second (1,200 and 2,400 prompts), median TTFT. The same
             tables' vLLM v0.6.0 rows (`--num-scheduler-steps 10`, `--max_model_len 4096`, the same
             bench_serving command with `--backend vllm`) are kept beside the table (`MULTI_STEP`).
  NIM-1.8    NVIDIA NIM LLM benchmarking guide 1.0.0, "Performance" (docs.nvidia.com/nim/
             benchmarking/llm/1.0.0/performance), Llama-3.3-70B-Instruct NIM 1.8.0 on 2×H100 80GB,
             fp8 TP2, measured with AIPerf; concurrency 1.

The one row this table used to carry as a known miss, TRT-v0.5's LLaMA-2 70B TP4 FP8 first token at
128 tokens (26 ms; the prior predicts 16.8 ms, 0.65×), is replaced by the same setup measured six
releases later: TRT-v0.9 publishes 19.6 ms (0.86×). Same GPU, model, precision, TP, prompt length,
batch and benchmark binary, so the 6.4 ms that went away is the 2023 engine, not a physical term a
prior for current engines should carry. Two more facts point the same way: over the same releases
the A100 FP16 row of that setup moved only from 47 to 45.6 ms (and the prior meets it without any
extra per-layer or all-reduce cost: 1.08×), so neither NCCL's small-message latency nor launches
without CUDA graphs — both the same on A100 in v0.5 — explain the H100 gap; and the gap is FP8-only
(v0.5's FP8 rows are all slow: 0.78–0.83× at 7B and at 2,048 tokens, where the GEMMs dominate).
The other TRT-v0.5 FP8 rows stay (they meet ±25%, with that reason). Of TRT-v0.9's H100/H200 FP8
table the batch-1 rows of LLaMA-2 7B and 70B are here too, TP4 and TP8. The TP8 row (85.1 ms at
2,048 tokens on H100) was left out while the prior charged each all-reduce at the link's full
450 GB/s (59.9 ms, 0.70×): there each all-reduce moves 2,048 × 8,192 × 2 bytes = 33.5 MB, where
NCCL's published all-reduce reaches 0.75 of the line rate (`ALL_REDUCE_BUS_BANDWIDTH` below and
`perf.ALL_REDUCE_BANDWIDTH_FRACTION`). With it the row is 66.9 ms (0.79×), within ±25% beside the
other v0.9 FP8 rows (0.85–0.92×); what the bandwidth term leaves (about 18 ms of 85) is not the
all-reduce — NCCL moves 33.5 MB in 199 µs on 8 H100s, and the prior now charges 199 µs — but the
TP8 GEMMs (each GPU multiplies 2,048 tokens by an eighth of every weight matrix, 1,024–3,584 wide
in the split dimension, where a 2024 FP8 kernel is further from the peak than at TP4) and the 2024
engine. The same document's A100 FP16 table has the same model at TP8 and 2,048 tokens (249.2 ms):
no FP8 kernels, the same 33.5 MB all-reduces, and the prior meets it (0.94×; 0.90× at the full line
rate). Its other A100 rows remeasure v0.5's within 3%, which stay. Rows of that document not here:
its L40S FP8 LLaMA-2 70B rows (TP8 at 128 tokens 70.4 ms, TP4 at 2,048 tokens 673.3 ms; the prior
0.67× and 0.79×), whose all-reduces cross PCIe through a host topology the document does not give,
and its Mixtral 8x7B TP2 rows, whose 2,048-token first tokens (89.5 ms on H100, 87.7 on H200) the
prior misses by 2.4–2.5× at any all-reduce cost (its 128-token ones fit: 1.00× and 0.89×), the MoE
kernels of a 2024 engine, which is not what the prior models.

All-reduce bus bandwidth (`ALL_REDUCE_BUS_BANDWIDTH`): Azure/AI-benchmarking-guide, the results
pages of the ND H100 v5 (NCCL 2.18.5, commit f350e7e, "Azure Results/ND_H100_v5_results.md"),
ND H200 v5 (NCCL 2.20.5, commit 7f20e5f, "Azure_Results/ND_H200_v5_results.md") and ND A100 v4
(NCCL 2.18.5, commit 3bb66ca, "Azure_Results/ND_A100_v4_results.md") virtual machines:
nccl-tests' all_reduce_perf on the VM's 8 GPUs, in-place bus bandwidth from 1 KB to 8 GB. A row's
published time is busbw's definition read backwards (nccl-tests doc/PERFORMANCE.md):
time = 2(p − 1)/p · size / busbw. The sizes kept are those of the table's prefill passes: 128 to
5,000 tokens of a hidden size of 4,096–8,192 in BF16 are 1–82 MB; the rows are 2–64 MiB. Beyond
(128 MiB: 400.6 GB/s on H100, 412.5 on H200) NCCL's NVLink SHARP takes the bus bandwidth past the
ring's and the prior's time is 1.23–1.27× the published one; on A100 the prior meets 64 and
128 MiB (0.78–0.79×) and misses below (`A100_MID_SIZES`). Three H100 rows at a decode step's sizes
(64 KiB–1 MiB: 4–64 sequences of a hidden size of 8,192) are kept as stated misses
(`NCCL_DECODE_SIZES`): NCCL takes a flat 42–43 µs there, the prior charges 25–30 µs.

SGLang's online rows need the ShareGPT sample's lengths, which the README does not print: the mean
prompt is 230 tokens (vLLM PR #18566 counts 229,711 input tokens over 1,000 ShareGPT prompts with
the Llama-3.1 tokenizer and the same ≥ 4-token, ≤ 1,024/2,048 filter) and the mean output 194
tokens (the README's own offline rows: 3,856 output tok/s ÷ 19.84 req/s, and 4,281.5 ÷ 22.03); the
shapes are taken as lognormal with c² = 1 (ShareGPT's prompts and replies are right-skewed). The
step budget is SGLang's default chunked-prefill size, 8,192 tokens. NIM's concurrency tables are
not used for this kind: a closed loop of N clients with fixed lengths keeps its requests in step
with one another, which an open Poisson load does not describe.

SGLang's two 70B TP4 rows (0.78–0.79×) hold the kind's geometric mean at 0.897, and no term of the
prior explains them. Written as the latency of each of a step's 160 all-reduces, the tensor-parallel
cost each BF16/FP8 row implies is: vLLM's Llama-3-70B TP4 on H100 23 µs, on H200 30 µs, on A100
38 µs; NIM 1.8's 70B TP2 inter-token latency 23–26 µs; SGLang 0.3's own published median ITL
(21.67 and 24.45 ms, at the planner's mean decode batch of 16.5 and 38.4) 35–40 µs; but SGLang 0.3's
median TTFT 67–71 µs. One run's two figures disagree by about 2×, so the gap is not a per-step or
per-all-reduce cost: the value that meets the TTFT rows puts that run's ITL 20–28% high and vLLM's
H100 TP4 row at 1.37–1.40× (it is 1.16×, outside ±15%, already at NCCL's published 42 µs for a
decode-size all-reduce, `NCCL_DECODE_SIZES`). The ITL part (1.7–2.8 ms per step over the prior) is of the order
SGLang v0.4 removed with its overlapped CPU scheduler (lmsys.org/blog/2024-12-04-sglang-v0-4:
"Zero-overhead batch scheduler: 1.1x increase in throughput"), a cost of the 2024 engine; what
adds 12 ms to the first token at TP4 but not at TP1 is not published. The rows stay, within their
±25%, and test_published holds the mean as a stated miss.

The document's vLLM v0.6.0 rows (median TTFT 100.48 and 120.39 ms for the 8B on A100 at 4 and 8
requests/s, 179.15 and 207.12 ms for the 70B TP4 on H100) are 3–4.5× the prior (0.33, 0.31, 0.23,
0.22×), and are kept beside the table (`MULTI_STEP`), not in it: the server ran with
multi-step scheduling (`--num-scheduler-steps 10`, vLLM's v0.6.0 blog: "performs scheduling and
input preparation once and runs the model for n consecutive steps"), so a prompt that arrives
mid-run waits for the run to end. The same rows show the bursts: median ITL 129.32, 158.63, 231.23
and 275.32 ms against median TPOT 14.14, 17.09, 23.58 and 29.15 ms (9.1–9.8×). The prior's TTFT
plus half that median ITL — an arrival waiting half a run — is 0.97× and 0.97× at 8B and 0.88× and
0.89× at 70B TP4: what is left over is 3–4 ms at 8B and 22–24 ms at 70B TP4 on H100, the same
direction as SGLang's own 70B rows (12 ms). A prior for an engine without multi-step scheduling
does not charge that wait; the rows say what it costs where it is on, and vLLM has since removed
the mode (PR #22138, August 2025), so no pool runs it today. The step budget is 4,096
tokens (`VLLM06_BUDGET_TOKENS`; the prior's TTFT differs by under 1% at 8,192). Other sources
looked at and not tabled, with why: vLLM's v0.6.0 blog publishes its serving TTFTs only as charts
(mean and standard error, ShareGPT 500 prompts, 202 input and 179 output tokens on average);
vLLM's performance-benchmark pages (the builds above) carry serving tables (ShareGPT 200 prompts,
Poisson QPS 1, 4 and 16, median TTFT), but the copies read for this table end before them; and
runs of the same suite published as gists (gist.github.com/surajssd) on Azure's NC A100 v4 VMs
(A100 80GB PCIe, vLLM version not given) put TP4 all-reduces over a PCIe topology the presets do
not describe.

BF16 first tokens of a lone request on H100 or H200 (Llama-3.x 8B or 70B) are the prefill kind's
open gap: none is tabled, for want of a published figure whose setup is known. Looked at, with why
not: TensorRT-LLM's performance.md (v0.5, v0.8.0 and v0.9.0) publishes Hopper batch-1 first tokens
only in FP8 and FP16 only on A100; its performance-tuning guide
(docs/source/performance/fp8-quantization.md) gives a tuned FP16 Llama-3.3-70B engine on 4×H100 a
mean TTFT of 147.6 ms, but under load (1.21 requests/s completed), not for one request. NIM-1.8's
page also has concurrency-1 rows of Llama-3.1-8B-Instruct (NIM 1.3.0 and 1.8.0: 8.98 and 10.26 ms)
and Llama-3.1-70B-Instruct (NIM 1.3.0: 25.05 ms), but the copies read lose those sections' GPU,
precision, TP and length headings. The page's own concurrency-1 throughput, OSL / (TTFT +
(OSL − 1) · ITL), fits 200 output tokens for all three (and the stated 500 for the Llama-3.3-70B
5,000-token rows), and the 8B's ITL (4.37–4.63 ms) is shorter than the 4.8 ms it takes to read its
16 GB of BF16 weights at an H100 SXM's 3.35 TB/s, so those rows are not BF16 at TP1 on H100 SXM;
what they are is not stated. LambdaLabsML/vllm-benchmark's Llama-3-8B-Instruct runs on one H100 send
their 10 ShareGPT prompts at once (request rate inf), so their first tokens (62 ms) come from one
batched prefill; argonne-lcf/LLM-Inference-Bench's TTFTs are at batch 16, its batch-1 rows
end-to-end latencies. The aggregated kind has no more H100/H200 Llama-3.x rows in BF16 or FP8 than
SGLang 0.3's either: vLLM's nightly-benchmark pages (buildkite.com/vllm/performance-benchmark builds
3865 and 8863: vLLM, TensorRT-LLM, LMDeploy and TGI on 1,000 ShareGPT prompts at a Poisson 4 and 8
requests/s for Llama-3 8B, 1 and 4 for 70B, median TTFT) end, in the copies read, at their results
table's heading; SGLang's blog_v0_2 README gives commands only; and bench_serving outputs posted in
issue threads (sgl-project/sglang issue 1268: median TTFT 17–18 ms at 1 and 2 requests/s, 300
ShareGPT prompts, H100 SXM, prefix cache off) do not name the model or the engine version in the
part read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tokenscale.api import Precision
from tokenscale.planner import presets

Kind = Literal["prefill", "decode", "throughput", "aggregated_ttft"]
Measure = Literal["ttft", "itl", "batch_e2e", "output_tokens_per_s", "median_ttft_under_load"]

# LLaMA-2 shapes (meta-llama/Llama-2-7b-hf and Llama-2-70b-hf config.json; 6.74B and 68.98B
# parameters): TensorRT-LLM v0.5's "LLaMA 7B/70B". The 7B has full multi-head attention (32 KV heads).
LLAMA2_7B = presets.ModelArchitecture("LLaMA-2-7B", 6.74, 6.74, 32, 32, 128, 4096)
LLAMA2_70B = presets.ModelArchitecture("LLaMA-2-70B", 68.98, 68.98, 80, 8, 128, 8192)
LLAMA3_8B = presets.model_preset("Llama-3.1-8B")
# Llama-3-70B and Llama-3.3-70B have Llama-3.1-70B's shape (same config.json but for RoPE scaling).
LLAMA3_70B = presets.model_preset("Llama-3.1-70B")


@dataclass(frozen=True)
class Published:
    """One published figure and the setup it was measured in.

    value is in seconds (ttft, itl, batch_e2e, median_ttft_under_load) or output tokens per second
    (output_tokens_per_s). batch is the fixed batch or the concurrency; 0 for an offline run whose
    batch the engine chose, or an open-loop run (aggregated_ttft), whose load is `rate_per_s`
    requests per second with mean lengths isl/osl of c² `length_cv2`, on a step budget of
    `chunk_tokens` tokens.
    """

    id: str
    kind: Kind
    measure: Measure
    source: str
    gpu: str
    model: presets.ModelArchitecture
    precision: Precision
    tp: int
    isl: int
    osl: int
    batch: int
    value: float
    tolerance: float
    why: str
    rate_per_s: float = 0.0
    length_cv2: float = 0.0
    chunk_tokens: int = 0


def _row(
    id: str,
    kind: Kind,
    measure: Measure,
    source: str,
    gpu: str,
    model: presets.ModelArchitecture,
    precision: Precision,
    tp: int,
    isl: int,
    osl: int,
    batch: int,
    value: float,
    tolerance: float,
    why: str,
) -> Published:
    return Published(id, kind, measure, source, gpu, model, precision, tp, isl, osl, batch, value, tolerance, why)


def _loaded(
    id: str,
    source: str,
    gpu: str,
    model: presets.ModelArchitecture,
    tp: int,
    rate_per_s: float,
    value: float,
    why: str,
    *,
    chunk_tokens: int = 0,
) -> Published:
    """An aggregated_ttft row of SGLang 0.3's ShareGPT runs (lengths and budget: the module docstring).

    chunk_tokens is the engine's step budget, SGLang's default chunked-prefill size unless given.
    """
    return Published(
        id,
        "aggregated_ttft",
        "median_ttft_under_load",
        source,
        gpu,
        model,
        "bf16",
        tp,
        SHAREGPT_ISL,
        SHAREGPT_OSL,
        0,
        value,
        0.25,
        why,
        rate_per_s=rate_per_s,
        length_cv2=1.0,
        chunk_tokens=chunk_tokens or SGLANG_CHUNK_TOKENS,
    )


SHAREGPT_ISL = 230  # mean prompt tokens of the ShareGPT sample (module docstring)
SHAREGPT_OSL = 194  # mean output tokens
SGLANG_CHUNK_TOKENS = 8192  # SGLang's default chunked-prefill size
# vLLM 0.6's step budget as SGLang-0.3's document launched it (--max_model_len 4096, chunked prefill
# off, as it is by default below a 32K context): SchedulerConfig's max(max_model_len, 2048).
VLLM06_BUDGET_TOKENS = 4096

EXACT = "setup maps exactly: engine, precision, TP, lengths and batch are all given"
TRT_LOW_LATENCY = "batch-1 first token at a fixed prompt length, precision and TP all given"
TRT_OFFLINE = (
    "offline throughput: the engine picks the batch (max_batch and the KV fraction are set by "
    "trtllm-bench's heuristics, 0.90–0.95) and whether the FP8 checkpoint's KV cache is FP8 is not stated"
)
VLLM_LATENCY = (
    "batch, lengths, TP and dtype are given; the runner's vLLM version and whether the host ran other jobs are not"
)
TRT_V05_FP8 = (
    "batch-1 first token with precision, TP and lengths given, but from a 2023 engine (v0.5): "
    "first-generation FP8 kernels (about 0.45 of the FP8 peak, against 0.6 in the 2025 FP8 rows) "
    "and no CUDA graphs; the prior follows current engines"
)
TRT_V09_FP8 = (
    "batch-1 first token with precision, TP and lengths given, from a 2024 engine (v0.9): FP8 kernels a "
    "year older than the 2025 FP8 rows (NIM 1.8, TensorRT-LLM 1.0) the prior's FP8 MFU is fitted to"
)
SGLANG_SHAREGPT = (
    "rate, engine, TP and dtype given; ShareGPT's length distribution is not printed (means from "
    "other counts, lognormal shape assumed)"
)
SGLANG_70B = (
    SGLANG_SHAREGPT + "; unlike the 8B run, the 70B server runs without torch.compile, and its first "
    "tokens imply twice the per-step tensor-parallel cost its own inter-token latencies do (module docstring)"
)
VLLM060_SHAREGPT = (
    "rate, engine version, TP and dtype given, and the prompts are SGLang's rows' own sample (same "
    "bench_serving, dataset, count and seed); ShareGPT's length distribution is not printed (module docstring)"
)
TRT_V09_FP8_TP8 = (
    TRT_V09_FP8 + "; at TP8 each GPU holds an eighth of every weight matrix (1,024–3,584 wide in the "
    "split dimension), narrower GEMMs than the prior's one FP8 MFU follows"
)
NIM_STREAM = (
    "concurrency 1 through an HTTP frontend (AIPerf): the engine behind the NIM profile (TensorRT-LLM "
    "or vLLM) and its KV-cache precision are not stated"
)

PUBLISHED: tuple[Published, ...] = (
    # --- prefill: first-token latency of one request -------------------------------------------
    _row(
        "trt05-h100-fp8-llama2-7b-isl128",
        "prefill",
        "ttft",
        "TRT-v0.5",
        "H100",
        LLAMA2_7B,
        "fp8",
        1,
        128,
        1,
        1,
        0.007,
        0.25,
        TRT_V05_FP8,
    ),
    _row(
        "trt05-h100-fp8-llama2-7b-isl2048",
        "prefill",
        "ttft",
        "TRT-v0.5",
        "H100",
        LLAMA2_7B,
        "fp8",
        1,
        2048,
        1,
        1,
        0.036,
        0.25,
        TRT_V05_FP8,
    ),
    _row(
        "trt09-h100-fp8-llama2-70b-tp4-isl128",
        "prefill",
        "ttft",
        "TRT-v0.9",
        "H100",
        LLAMA2_70B,
        "fp8",
        4,
        128,
        1,
        1,
        0.0196,
        0.25,
        TRT_V09_FP8,
    ),
    _row(
        "trt09-h200-fp8-llama2-70b-tp4-isl128",
        "prefill",
        "ttft",
        "TRT-v0.9",
        "H200",
        LLAMA2_70B,
        "fp8",
        4,
        128,
        1,
        1,
        0.0178,
        0.25,
        TRT_V09_FP8,
    ),
    _row(
        "trt09-h200-fp8-llama2-70b-tp4-isl2048",
        "prefill",
        "ttft",
        "TRT-v0.9",
        "H200",
        LLAMA2_70B,
        "fp8",
        4,
        2048,
        1,
        1,
        0.103,
        0.25,
        TRT_V09_FP8,
    ),
    _row(
        "trt09-h100-fp8-llama2-70b-tp8-isl2048",
        "prefill",
        "ttft",
        "TRT-v0.9",
        "H100",
        LLAMA2_70B,
        "fp8",
        8,
        2048,
        1,
        1,
        0.0851,
        0.25,
        TRT_V09_FP8_TP8,
    ),
    _row(
        "trt09-h100-fp8-llama2-7b-isl128",
        "prefill",
        "ttft",
        "TRT-v0.9",
        "H100",
        LLAMA2_7B,
        "fp8",
        1,
        128,
        1,
        1,
        0.0063,
        0.25,
        TRT_V09_FP8,
    ),
    _row(
        "trt09-h100-fp8-llama2-7b-isl2048",
        "prefill",
        "ttft",
        "TRT-v0.9",
        "H100",
        LLAMA2_7B,
        "fp8",
        1,
        2048,
        1,
        1,
        0.0308,
        0.25,
        TRT_V09_FP8,
    ),
    _row(
        "trt09-h200-fp8-llama2-7b-isl128",
        "prefill",
        "ttft",
        "TRT-v0.9",
        "H200",
        LLAMA2_7B,
        "fp8",
        1,
        128,
        1,
        1,
        0.0057,
        0.25,
        TRT_V09_FP8,
    ),
    _row(
        "trt09-h200-fp8-llama2-7b-isl2048",
        "prefill",
        "ttft",
        "TRT-v0.9",
        "H200",
        LLAMA2_7B,
        "fp8",
        1,
        2048,
        1,
        1,
        0.0302,
        0.25,
        TRT_V09_FP8,
    ),
    _row(
        "trt05-h100-fp8-llama2-70b-tp4-isl2048",
        "prefill",
        "ttft",
        "TRT-v0.5",
        "H100",
        LLAMA2_70B,
        "fp8",
        4,
        2048,
        1,
        1,
        0.109,
        0.25,
        TRT_V05_FP8,
    ),
    _row(
        "trt05-a100-fp16-llama2-7b-isl128",
        "prefill",
        "ttft",
        "TRT-v0.5",
        "A100",
        LLAMA2_7B,
        "bf16",
        1,
        128,
        1,
        1,
        0.016,
        0.15,
        TRT_LOW_LATENCY + "; FP16 runs at the BF16 rate",
    ),
    _row(
        "trt05-a100-fp16-llama2-7b-isl2048",
        "prefill",
        "ttft",
        "TRT-v0.5",
        "A100",
        LLAMA2_7B,
        "bf16",
        1,
        2048,
        1,
        1,
        0.133,
        0.15,
        TRT_LOW_LATENCY + "; FP16 runs at the BF16 rate",
    ),
    _row(
        "trt05-a100-fp16-llama2-70b-tp4-isl128",
        "prefill",
        "ttft",
        "TRT-v0.5",
        "A100",
        LLAMA2_70B,
        "bf16",
        4,
        128,
        1,
        1,
        0.047,
        0.15,
        TRT_LOW_LATENCY + "; FP16 runs at the BF16 rate",
    ),
    _row(
        "trt05-a100-fp16-llama2-70b-tp4-isl2048",
        "prefill",
        "ttft",
        "TRT-v0.5",
        "A100",
        LLAMA2_70B,
        "bf16",
        4,
        2048,
        1,
        1,
        0.377,
        0.15,
        TRT_LOW_LATENCY + "; FP16 runs at the BF16 rate",
    ),
    _row(
        "trt09-a100-fp16-llama2-70b-tp8-isl2048",
        "prefill",
        "ttft",
        "TRT-v0.9",
        "A100",
        LLAMA2_70B,
        "bf16",
        8,
        2048,
        1,
        1,
        0.2492,
        0.15,
        TRT_LOW_LATENCY + "; FP16 runs at the BF16 rate",
    ),
    _row(
        "nim18-h100-fp8-llama33-70b-tp2-isl5000",
        "prefill",
        "ttft",
        "NIM-1.8",
        "H100",
        LLAMA3_70B,
        "fp8",
        2,
        5000,
        500,
        1,
        0.40677,
        0.25,
        NIM_STREAM,
    ),
    _row(
        "nim18-h100-fp8-llama33-70b-tp2-isl500",
        "prefill",
        "ttft",
        "NIM-1.8",
        "H100",
        LLAMA3_70B,
        "fp8",
        2,
        500,
        2000,
        1,
        0.04777,
        0.25,
        NIM_STREAM,
    ),
    # --- decode: one stream's inter-token latency, or a fixed batch's end-to-end latency ---------
    _row(
        "vllm-h100-bf16-llama31-8b-batch8",
        "decode",
        "batch_e2e",
        "vLLM-perf",
        "H100",
        LLAMA3_8B,
        "bf16",
        1,
        32,
        128,
        8,
        0.997542,
        0.15,
        VLLM_LATENCY,
    ),
    _row(
        "vllm-h200-bf16-llama31-8b-batch8",
        "decode",
        "batch_e2e",
        "vLLM-perf",
        "H200",
        LLAMA3_8B,
        "bf16",
        1,
        32,
        128,
        8,
        0.833421,
        0.15,
        VLLM_LATENCY,
    ),
    _row(
        "vllm-h100-bf16-llama3-70b-tp4-batch8",
        "decode",
        "batch_e2e",
        "vLLM-perf",
        "H100",
        LLAMA3_70B,
        "bf16",
        4,
        32,
        128,
        8,
        2.44447,
        0.15,
        VLLM_LATENCY,
    ),
    _row(
        "vllm-h200-bf16-llama3-70b-tp4-batch8",
        "decode",
        "batch_e2e",
        "vLLM-perf",
        "H200",
        LLAMA3_70B,
        "bf16",
        4,
        32,
        128,
        8,
        2.07753,
        0.15,
        VLLM_LATENCY,
    ),
    _row(
        "vllm-a100-bf16-llama31-8b-batch8",
        "decode",
        "batch_e2e",
        "vLLM-perf",
        "A100",
        LLAMA3_8B,
        "bf16",
        1,
        32,
        128,
        8,
        1.57927,
        0.15,
        VLLM_LATENCY,
    ),
    _row(
        "vllm-a100-bf16-llama3-70b-tp4-batch8",
        "decode",
        "batch_e2e",
        "vLLM-perf",
        "A100",
        LLAMA3_70B,
        "bf16",
        4,
        32,
        128,
        8,
        3.99059,
        0.15,
        VLLM_LATENCY,
    ),
    _row(
        "nim18-h100-fp8-llama33-70b-tp2-itl-isl5000",
        "decode",
        "itl",
        "NIM-1.8",
        "H100",
        LLAMA3_70B,
        "fp8",
        2,
        5000,
        500,
        1,
        0.01858,
        0.25,
        NIM_STREAM,
    ),
    _row(
        "nim18-h100-fp8-llama33-70b-tp2-itl-isl500",
        "decode",
        "itl",
        "NIM-1.8",
        "H100",
        LLAMA3_70B,
        "fp8",
        2,
        500,
        2000,
        1,
        0.01891,
        0.25,
        NIM_STREAM,
    ),
    # --- throughput: output tokens/s of a full replica (offline) --------------------------------
    _row(
        "trt10-h100-fp8-llama31-8b-500-2000",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H100",
        LLAMA3_8B,
        "fp8",
        1,
        500,
        2000,
        0,
        17660.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h100-fp8-llama31-8b-1000-1000",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H100",
        LLAMA3_8B,
        "fp8",
        1,
        1000,
        1000,
        0,
        15220.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h100-fp8-llama31-8b-2048-2048",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H100",
        LLAMA3_8B,
        "fp8",
        1,
        2048,
        2048,
        0,
        9305.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h100-fp8-llama31-8b-5000-500",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H100",
        LLAMA3_8B,
        "fp8",
        1,
        5000,
        500,
        0,
        3459.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h200-fp8-llama31-8b-500-2000",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H200",
        LLAMA3_8B,
        "fp8",
        1,
        500,
        2000,
        0,
        20770.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h200-fp8-llama31-8b-1000-1000",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H200",
        LLAMA3_8B,
        "fp8",
        1,
        1000,
        1000,
        0,
        17744.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h200-fp8-llama31-8b-2048-2048",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H200",
        LLAMA3_8B,
        "fp8",
        1,
        2048,
        2048,
        0,
        12194.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h200-fp8-llama31-8b-5000-500",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H200",
        LLAMA3_8B,
        "fp8",
        1,
        5000,
        500,
        0,
        3902.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h100-fp8-llama33-70b-tp2-500-2000",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H100",
        LLAMA3_70B,
        "fp8",
        2,
        500,
        2000,
        0,
        5222.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h100-fp8-llama33-70b-tp2-1000-1000",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H100",
        LLAMA3_70B,
        "fp8",
        2,
        1000,
        1000,
        0,
        4205.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h100-fp8-llama33-70b-tp2-2048-2048",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H100",
        LLAMA3_70B,
        "fp8",
        2,
        2048,
        2048,
        0,
        3082.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h100-fp8-llama33-70b-tp2-5000-500",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H100",
        LLAMA3_70B,
        "fp8",
        2,
        5000,
        500,
        0,
        898.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h200-fp8-llama33-70b-tp1-500-2000",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H200",
        LLAMA3_70B,
        "fp8",
        1,
        500,
        2000,
        0,
        3666.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h200-fp8-llama33-70b-tp1-1000-1000",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H200",
        LLAMA3_70B,
        "fp8",
        1,
        1000,
        1000,
        0,
        2909.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h200-fp8-llama33-70b-tp1-2048-2048",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H200",
        LLAMA3_70B,
        "fp8",
        1,
        2048,
        2048,
        0,
        2003.0,
        0.25,
        TRT_OFFLINE,
    ),
    _row(
        "trt10-h200-fp8-llama33-70b-tp1-5000-500",
        "throughput",
        "output_tokens_per_s",
        "TRT-v1.0",
        "H200",
        LLAMA3_70B,
        "fp8",
        1,
        5000,
        500,
        0,
        566.0,
        0.25,
        TRT_OFFLINE,
    ),
    # --- aggregated TTFT under an open Poisson load ------------------------------------------------
    _loaded("sglang03-a100-bf16-llama31-8b-rps4", "SGLang-0.3", "A100", LLAMA3_8B, 1, 4.0, 0.03198, SGLANG_SHAREGPT),
    _loaded("sglang03-a100-bf16-llama31-8b-rps8", "SGLang-0.3", "A100", LLAMA3_8B, 1, 8.0, 0.03568, SGLANG_SHAREGPT),
    _loaded("sglang03-h100-bf16-llama31-70b-tp4-rps4", "SGLang-0.3", "H100", LLAMA3_70B, 4, 4.0, 0.05394, SGLANG_70B),
    _loaded("sglang03-h100-bf16-llama31-70b-tp4-rps8", "SGLang-0.3", "H100", LLAMA3_70B, 4, 8.0, 0.05811, SGLANG_70B),
)


# SGLang-0.3's document's vLLM v0.6.0 rows: same sample, GPUs, models and rates, multi-step scheduling
# on (`--num-scheduler-steps 10`). Not in the table: vLLM removed multi-step scheduling in August 2025
# (vLLM PR #22138, "[V0 Deprecation] Remove multi-step scheduling"), so no engine a pool runs today
# has it, and the prior, which does not model it, misses these rows by 3–4.5× (module docstring).
# test_published holds them outside their tolerance, so a prior that begins to charge the wait shows.
MULTI_STEP: tuple[Published, ...] = (
    _loaded(
        "vllm060-a100-bf16-llama31-8b-rps4",
        "SGLang-0.3",
        "A100",
        LLAMA3_8B,
        1,
        4.0,
        0.10048,
        VLLM060_SHAREGPT,
        chunk_tokens=VLLM06_BUDGET_TOKENS,
    ),
    _loaded(
        "vllm060-a100-bf16-llama31-8b-rps8",
        "SGLang-0.3",
        "A100",
        LLAMA3_8B,
        1,
        8.0,
        0.12039,
        VLLM060_SHAREGPT,
        chunk_tokens=VLLM06_BUDGET_TOKENS,
    ),
    _loaded(
        "vllm060-h100-bf16-llama31-70b-tp4-rps4",
        "SGLang-0.3",
        "H100",
        LLAMA3_70B,
        4,
        4.0,
        0.17915,
        VLLM060_SHAREGPT,
        chunk_tokens=VLLM06_BUDGET_TOKENS,
    ),
    _loaded(
        "vllm060-h100-bf16-llama31-70b-tp4-rps8",
        "SGLang-0.3",
        "H100",
        LLAMA3_70B,
        4,
        8.0,
        0.20712,
        VLLM060_SHAREGPT,
        chunk_tokens=VLLM06_BUDGET_TOKENS,
    ),
)


@dataclass(frozen=True)
class AllReduceBusBandwidth:
    """One published NCCL all-reduce figure: `busbw_gb_per_s` for `size_bytes` on `gpus` GPUs of a VM.

    expected_miss names why the prior's all-reduce time is known to be off by more than the tolerance
    the test holds (empty when it is held to it).
    """

    id: str
    source: str
    gpu: str
    gpus: int
    size_bytes: int
    busbw_gb_per_s: float
    expected_miss: str = ""

    @property
    def time_s(self) -> float:
        """Seconds of one all-reduce: busbw = 2(p − 1)/p · size / time (nccl-tests doc/PERFORMANCE.md)."""
        return 2.0 * (self.gpus - 1) / self.gpus * self.size_bytes / (self.busbw_gb_per_s * 1e9)


A100_MID_SIZES = (
    "A100's NCCL moves 2–32 MiB at 0.28–0.47 of its 300 GB/s line rate once the latency is taken out "
    "(busbw 231.6 GB/s, 0.77, only at 8 GB); the prior's one fraction follows H100 and H200, and A100's "
    "own 0.47 at 32 MiB would put TRT-v0.5's A100 FP16 TP4 first token at 2,048 tokens at 1.16×"
)


NCCL_DECODE_SIZES = (
    "a decode step's all-reduces (batch × hidden × 2 bytes) are latency-bound: NCCL takes 42–43 µs from "
    "64 KiB to 1 MiB on these 8 GPUs, timed without CUDA graphs, where the prior charges 25–30 µs; the "
    "engines run these sizes in custom all-reduce kernels inside CUDA graphs (vLLM's takes messages under "
    "8 MiB on fully NVLinked GPUs), and the prior's latency is fitted to vLLM's decode steps "
    "(`perf.ALL_REDUCE_LATENCY_S`), which NCCL's 42 µs would put at 1.16× (Llama-3-70B TP4 on H100)"
)


def _nccl(
    gpu: str, source: str, size_bytes: int, busbw_gb_per_s: float, expected_miss: str = ""
) -> AllReduceBusBandwidth:
    """A row of Azure's 8-GPU all_reduce_perf tables (module docstring), named by GPU and size in MiB (KiB below)."""
    size = f"{size_bytes >> 20}mib" if size_bytes >= 1 << 20 else f"{size_bytes >> 10}kib"
    row_id = f"{gpu.lower()}-8gpu-{size}"
    return AllReduceBusBandwidth(row_id, source, gpu, 8, size_bytes, busbw_gb_per_s, expected_miss)


AZURE_H100 = "Azure ND H100 v5, NCCL 2.18.5"
AZURE_H200 = "Azure ND H200 v5, NCCL 2.20.5"
AZURE_A100 = "Azure ND A100 v4, NCCL 2.18.5"
ALL_REDUCE_BUS_BANDWIDTH: tuple[AllReduceBusBandwidth, ...] = (
    _nccl("H100", AZURE_H100, 64 << 10, 2.72, NCCL_DECODE_SIZES),
    _nccl("H100", AZURE_H100, 256 << 10, 10.86, NCCL_DECODE_SIZES),
    _nccl("H100", AZURE_H100, 1 << 20, 43.70, NCCL_DECODE_SIZES),
    _nccl("H100", AZURE_H100, 2 << 20, 81.93),
    _nccl("H100", AZURE_H100, 4 << 20, 128.73),
    _nccl("H100", AZURE_H100, 8 << 20, 172.13),
    _nccl("H100", AZURE_H100, 16 << 20, 234.45),
    _nccl("H100", AZURE_H100, 32 << 20, 295.53),
    _nccl("H100", AZURE_H100, 64 << 20, 361.78),
    _nccl("H200", AZURE_H200, 2 << 20, 88.78),
    _nccl("H200", AZURE_H200, 4 << 20, 138.44),
    _nccl("H200", AZURE_H200, 8 << 20, 181.94),
    _nccl("H200", AZURE_H200, 16 << 20, 240.41),
    _nccl("H200", AZURE_H200, 32 << 20, 300.91),
    _nccl("H200", AZURE_H200, 64 << 20, 368.11),
    _nccl("A100", AZURE_A100, 2 << 20, 53.54, A100_MID_SIZES),
    _nccl("A100", AZURE_A100, 4 << 20, 71.43, A100_MID_SIZES),
    _nccl("A100", AZURE_A100, 8 << 20, 89.99, A100_MID_SIZES),
    _nccl("A100", AZURE_A100, 16 << 20, 109.22, A100_MID_SIZES),
    _nccl("A100", AZURE_A100, 32 << 20, 132.77, A100_MID_SIZES),
    _nccl("A100", AZURE_A100, 64 << 20, 166.63),
)

"""Read InferencePool manifests from YAML files and explain what is wrong with bad ones.

Called by the CLI (`validate`, `plan`, `simulate`). A file may hold several YAML documents (the
examples carry the Deployments a pool scales); only `tokenscale.dev` InferencePools are parsed.
The path `-` reads standard input, named `<stdin>` in messages.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import Field, ValidationError, model_validator

from tokenscale import api
from tokenscale.planner.lengths import LengthDistribution
from tokenscale.planner.observation import DataNote, LatencyHistogram, Observation, ReplicaCounts, implausible


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the field and what to fix."""


@dataclass(frozen=True)
class LoadedPool:
    """A parsed pool and where it came from."""

    source: str
    pool: api.InferencePool
    node: yaml.Node | None = field(default=None, compare=False, repr=False)  # the document, for line numbers

    def where(self, loc: Sequence[int | str]) -> str:
        """`file:line` of a field given by its location from the document's root."""
        return _where(self.source, self.node, loc)

    @property
    def name(self) -> str:
        return str(self.pool.metadata.get("name", "<unnamed>"))


def format_validation_error(err: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: `spec.pools.decode.maxReplicas: field required`."""
    lines = []
    for item in err.errors(include_url=False):
        loc = ".".join(str(part) for part in item["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; fields are camelCase)"
        elif item["type"] == "string_pattern_mismatch" and loc.endswith("url"):
            msg = "must be an http:// or https:// URL"
        elif item["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{path}: {msg}" if path else msg)
    return lines


def parse_pool(doc: dict[str, Any], source: str, node: yaml.Node | None = None) -> api.InferencePool:
    """Validate one InferencePool document, raising ManifestError with every problem listed.

    With the document's YAML `node`, the message opens with `file:line:` of the first problem.
    """
    try:
        pool = api.InferencePool.model_validate(doc)
    except ValidationError as err:
        name = (
            (doc.get("metadata") or {}).get("name", "<unnamed>")
            if isinstance(doc.get("metadata"), dict)
            else ("<unnamed>")
        )
        problems = "; ".join(format_validation_error(err))
        first = err.errors(include_url=False)[0]["loc"] if err.error_count() else ()
        raise ManifestError(f"{_where(source, node, first)}: InferencePool {name}: {problems}") from None
    name = pool.metadata.get("name")
    if not isinstance(name, str) or not name:
        # The API server refuses an object without a name; so does everything that keys on it.
        raise ManifestError(f"{_where(source, node, ('metadata',))}: InferencePool: metadata.name is required")
    return pool


def _where(source: str, node: yaml.Node | None, loc: Sequence[int | str]) -> str:
    """`file:line` of the deepest node along `loc` (a pydantic error location), or `file` alone."""
    if node is None:
        return source
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
            if found is None:
                break
            key = next(k for k, v in node.value if v is found)
            line = key.start_mark.line + 1
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return f"{source}:{line}"


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (PyYAML keeps the last; the API server refuses them)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (the last one would silently win)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


STDIN = "-"


def source_name(path: Path) -> str:
    """How messages name a file: `<stdin>` for `-`, else the path as given."""
    return "<stdin>" if str(path) == STDIN else str(path)


def _read_text(path: Path) -> str:
    """The text of `path`, or of standard input for `-`; ManifestError naming the file when unreadable."""
    if str(path) == STDIN:
        data = sys.stdin.buffer.read()
    else:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ManifestError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ManifestError(
            f"{source_name(path)}:{line}: not a UTF-8 text file (byte {err.start} is {data[err.start]:#04x})"
        ) from None


def _documents(path: Path) -> Iterable[tuple[int, Any, yaml.Node | None]]:
    """(index, document, its YAML node) for every non-empty document of a YAML file (`-`: stdin)."""
    text = _read_text(path)
    name = source_name(path)
    loader = _StrictLoader(text)
    out: list[tuple[int, Any, yaml.Node | None]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            doc = loader.construct_document(node)
            if doc is not None:
                out.append((len(out), doc, node))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(err, "problem", None) or str(err)
        raise ManifestError(f"{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    return out


def load_pools(path: Path) -> list[LoadedPool]:
    """Every InferencePool in a YAML file; ManifestError when one is invalid or there is none."""
    pools = []
    name = source_name(path)
    for index, doc, node in _documents(path):
        if not isinstance(doc, dict):
            raise ManifestError(f"{_where(name, node, ())}: document {index + 1} is not a mapping")
        if doc.get("kind") != api.KIND or not str(doc.get("apiVersion", "")).startswith(api.GROUP + "/"):
            continue
        if doc.get("apiVersion") != f"{api.GROUP}/{api.VERSION}":
            raise ManifestError(
                f"{_where(name, node, ('apiVersion',))}: apiVersion {doc.get('apiVersion')!r} is not served; "
                f"use {api.GROUP}/{api.VERSION}"
            )
        pools.append(LoadedPool(name, parse_pool(doc, name, node), node))
    if not pools:
        raise ManifestError(f"{name}: no {api.GROUP}/{api.VERSION} InferencePool found in the file")
    return pools


def load_one_pool(path: Path) -> LoadedPool:
    """The single InferencePool of a file (the `plan` and `simulate` commands act on one)."""
    pools = load_pools(path)
    if len(pools) > 1:
        names = ", ".join(p.name for p in pools)
        raise ManifestError(f"{source_name(path)}: holds {len(pools)} InferencePools ({names}); give a file with one")
    return pools[0]


class RecordedReplicas(api.ApiModel):
    """Replicas of one pool in a recorded observation."""

    current: int = Field(ge=0, description="Replicas requested (ready and pending).")
    ready: int | None = Field(None, ge=0, description="Ready replicas; defaults to current.")


class RecordedLengths(api.ApiModel):
    """A prompt-length distribution: points in tokens and their probabilities (same length)."""

    tokens: list[float] = Field(min_length=1, description="Length points, ascending, tokens.")
    weights: list[float] = Field(min_length=1, description="Probability of each point.")

    @model_validator(mode="after")
    def _same_length(self) -> RecordedLengths:
        if len(self.tokens) != len(self.weights):
            raise ValueError("tokens and weights must have the same length")
        if (
            any(not math.isfinite(v) or v <= 0 for v in self.tokens)
            or any(not math.isfinite(v) or v < 0 for v in self.weights)
            or sum(self.weights) <= 0
        ):
            raise ValueError("tokens must be finite and > 0, weights finite, ≥ 0 and not all 0")
        if any(y < x for x, y in zip(self.tokens, self.tokens[1:], strict=False)):
            raise ValueError("tokens must be ascending")
        return self


class RecordedHistogram(api.ApiModel):
    """A latency histogram over the window: bucket bounds, the fraction of samples at or below each, samples."""

    bounds_seconds: list[float] = Field(min_length=1, description="Finite bucket upper bounds, ascending, s.")
    fraction_below: list[float] = Field(min_length=1, description="Fraction of samples ≤ each bound.")
    samples: float = Field(gt=0, description="Samples in the window.")

    @model_validator(mode="after")
    def _same_length(self) -> RecordedHistogram:
        if len(self.bounds_seconds) != len(self.fraction_below):
            raise ValueError("boundsSeconds and fractionBelow must have the same length")
        b, f = self.bounds_seconds, self.fraction_below
        if any(not math.isfinite(x) or x <= 0 for x in b) or any(y <= x for x, y in zip(b, b[1:], strict=False)):
            raise ValueError("boundsSeconds must be finite, > 0 and ascending")
        if any(not 0.0 <= x <= 1.0 for x in f) or any(y < x for x, y in zip(f, f[1:], strict=False)):
            raise ValueError("fractionBelow must be in [0, 1] and non-decreasing")
        return self


class RecordedObservation(api.ApiModel):
    """An observation written down by hand or copied from a pool's status, for `tokenscale plan`.

    Field names carry units. Omitted signals are missing (not zero), and the planner says so.
    """

    time_seconds: float = Field(0.0, description="Time of the observation, seconds (any epoch).")
    request_rate_per_second: float | None = Field(None, ge=0, description="Arrivals per second.")
    isl_mean_tokens: float | None = Field(None, ge=0, description="Mean input length.")
    osl_mean_tokens: float | None = Field(None, ge=0, description="Mean output length.")
    isl_cv2: float | None = Field(None, ge=0, description="Squared coefficient of variation of ISL.")
    isl_distribution: RecordedLengths | None = Field(None, description="Prompt-length shape from the histogram.")
    osl_cv2: float | None = Field(None, ge=0, description="Squared coefficient of variation of OSL.")
    arrival_cv2: float | None = Field(None, ge=0, description="Index of dispersion of arrival counts (1 = Poisson).")
    dispersion_bin_seconds: float | None = Field(None, gt=0, description="Bin of those counts, seconds.")
    ttft_seconds: float | None = Field(None, ge=0, description="Observed TTFT at the objective's quantile.")
    ttft_histogram: RecordedHistogram | None = Field(None, description="Observed TTFT buckets (for the tail fit).")
    tpot_seconds: float | None = Field(None, ge=0, description="Observed TPOT at the objective's quantile.")
    itl_seconds: float | None = Field(
        None, ge=0, description="Observed per-token inter-token latency at the TPOT objective's quantile."
    )
    itl_mean_seconds: float | None = Field(None, ge=0, description="Observed mean per-token inter-token latency.")
    prefill_time_mean_seconds: float | None = Field(None, ge=0, description="Observed mean prefill time.")
    kv_usage_fraction: float | None = Field(None, ge=0, le=1, description="KV-cache use.")
    replicas: dict[api.Role, RecordedReplicas] = Field(default_factory=dict, description="Replicas per role.")
    running_requests: dict[api.Role, float] = Field(default_factory=dict, description="Running requests per role.")
    waiting_requests: dict[api.Role, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="Requests queued per role."
    )

    @model_validator(mode="after")
    def _finite(self) -> RecordedObservation:
        # The load signals may be written as .inf (read as implausible data, like a broken exporter's);
        # anything else must be a finite number, or the planner would compute on infinities.
        load = {"request_rate_per_second", "isl_mean_tokens", "osl_mean_tokens"}
        for name, value in self:
            if name not in load and isinstance(value, float) and not math.isfinite(value):
                alias = type(self).model_fields[name].alias or name
                raise ValueError(f"{alias} must be a finite number, got {value}")
        for alias, counts in (("runningRequests", self.running_requests), ("waitingRequests", self.waiting_requests)):
            for role, count in counts.items():
                if not math.isfinite(count):
                    raise ValueError(f"{alias}.{role} must be a finite number, got {count}")
        return self

    def to_observation(self) -> Observation:
        notes: list[DataNote] = []
        load: dict[str, float | None] = {}
        for signal, name, value in (
            ("request_rate", "requestRatePerSecond", self.request_rate_per_second),
            ("isl_mean", "islMeanTokens", self.isl_mean_tokens),
            ("osl_mean", "oslMeanTokens", self.osl_mean_tokens),
        ):
            why = None if value is None else implausible(signal, value)
            if value is None:
                notes.append(DataNote(signal, "missing", f"{name} not in the observation file"))
            elif why is not None:  # `.inf` or 1e300 is bad data, held on like Prometheus garbage
                notes.append(DataNote(signal, "implausible", f"{name} {why}"))
                value = None
            load[signal] = value
        waiting: dict[api.Role, float] = {}
        for role, count in self.waiting_requests.items():
            if (why := implausible("waiting", count)) is not None:
                notes.append(DataNote(f"waiting_{role}", "implausible", f"waitingRequests.{role} {why}"))
            else:
                waiting[role] = count
        return Observation(
            time_s=self.time_seconds,
            request_rate_per_s=load["request_rate"],
            isl_mean_tokens=load["isl_mean"],
            osl_mean_tokens=load["osl_mean"],
            replicas={
                role: ReplicaCounts(r.current, r.current if r.ready is None else r.ready)
                for role, r in self.replicas.items()
            },
            isl_cv2=self.isl_cv2,
            isl_distribution=(
                LengthDistribution(np.asarray(d.tokens), _normalized(d.weights))
                if (d := self.isl_distribution) is not None
                else None
            ),
            osl_cv2=self.osl_cv2,
            arrival_cv2=self.arrival_cv2,
            dispersion_bin_s=self.dispersion_bin_seconds,
            ttft_quantile_s=self.ttft_seconds,
            ttft_histogram=(
                LatencyHistogram(tuple(h.bounds_seconds), tuple(h.fraction_below), h.samples)
                if (h := self.ttft_histogram) is not None
                else None
            ),
            tpot_quantile_s=self.tpot_seconds,
            itl_quantile_s=self.itl_seconds,
            itl_mean_s=self.itl_mean_seconds,
            prefill_time_mean_s=self.prefill_time_mean_seconds,
            waiting_requests=waiting,
            running_requests=dict(self.running_requests),
            kv_usage_fraction=self.kv_usage_fraction,
            notes=tuple(notes),
        )

    @classmethod
    def from_observation(cls, obs: Observation) -> RecordedObservation:
        """The recorded form of an observation (what `plan --prometheus -o json` prints), notes aside."""
        return cls(
            time_seconds=obs.time_s,
            request_rate_per_second=obs.request_rate_per_s,
            isl_mean_tokens=obs.isl_mean_tokens,
            osl_mean_tokens=obs.osl_mean_tokens,
            isl_cv2=obs.isl_cv2,
            isl_distribution=(
                RecordedLengths(tokens=d.tokens.tolist(), weights=d.weights.tolist())
                if (d := obs.isl_distribution) is not None
                else None
            ),
            osl_cv2=obs.osl_cv2,
            arrival_cv2=obs.arrival_cv2,
            dispersion_bin_seconds=obs.dispersion_bin_s,
            ttft_seconds=obs.ttft_quantile_s,
            ttft_histogram=(
                RecordedHistogram(
                    bounds_seconds=list(h.bounds_s), fraction_below=list(h.fraction_below), samples=h.samples
                )
                if (h := obs.ttft_histogram) is not None
                else None
            ),
            tpot_seconds=obs.tpot_quantile_s,
            itl_seconds=obs.itl_quantile_s,
            itl_mean_seconds=obs.itl_mean_s,
            prefill_time_mean_seconds=obs.prefill_time_mean_s,
            waiting_requests=dict(obs.waiting_requests),
            kv_usage_fraction=obs.kv_usage_fraction,
            replicas={role: RecordedReplicas(current=c.current, ready=c.ready) for role, c in obs.replicas.items()},
            running_requests=dict(obs.running_requests),
        )


def _normalized(weights: list[float]) -> npt.NDArray[np.float64]:
    """Probabilities as written when they sum to 1 (a printed observation round-trips bit for bit), else scaled."""
    w = np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    return w if abs(total - 1.0) <= 1e-9 else w / total


def load_observation(path: Path) -> Observation:
    """A recorded observation from a YAML file; ManifestError naming the field when it is wrong."""
    docs = list(_documents(path))
    name = source_name(path)
    if len(docs) != 1 or not isinstance(docs[0][1], dict):
        raise ManifestError(f"{name}: expected one YAML mapping with the observation")
    _, doc, node = docs[0]
    try:
        return RecordedObservation.model_validate(doc).to_observation()
    except ValidationError as err:
        first = err.errors(include_url=False)[0]["loc"] if err.error_count() else ()
        raise ManifestError(f"{_where(name, node, first)}: " + "; ".join(format_validation_error(err))) from None

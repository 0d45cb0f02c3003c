"""Named public request traces: download the published file once into a user cache, verify it, say where it came from.

Called by the CLI (`tokenscale simulate --trace azure-conv-2023`) and the benchmarks. A name maps to
one published file, pinned to a commit of the repository that publishes it, with its size and
sha256; the file is fetched once into `$XDG_CACHE_HOME/tokenscale/traces` (else
`~/.cache/tokenscale/traces`), checked on every use, and read by `sim/traces.py` like a local file.
A download that does not match is never cached. Nothing here is fetched at import.

The checksums were computed from copies of the published files kept in the project's test bed
(this machine cannot reach GitHub); their sizes match the published files byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Tests point downloads at a loopback HTTP server with this variable (`<base>/<file name>`); users
# have no reason to set it.
BASE_URL_ENV = "TOKENSCALE_TRACE_BASE_URL"
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class PublicTrace:
    """One published trace file and what a user must know about it."""

    name: str
    url: str  # pinned to a commit: the checksum holds for exactly this file
    file_name: str
    size_bytes: int
    sha256: str
    license: str
    citation: str
    description: str


CATALOG: Mapping[str, PublicTrace] = {
    t.name: t
    for t in (
        PublicTrace(
            name="azure-conv-2023",
            url="https://raw.githubusercontent.com/Azure/AzurePublicDataset/"
            "790921015d50dd6aae7f7e47f39ba0e235ad6b08/data/AzureLLMInferenceTrace_conv.csv",
            file_name="AzureLLMInferenceTrace_conv.csv",
            size_bytes=719_188,
            sha256="2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
            license="CC-BY 4.0 (github.com/Azure/AzurePublicDataset, LICENSE)",
            citation='Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024',
            description="Azure LLM inference trace 2023, conversation service: one hour, 19,366 requests",
        ),
        PublicTrace(
            name="mooncake-synthetic",
            url="https://raw.githubusercontent.com/kvcache-ai/Mooncake/"
            "3cca71daccf2a7afb8fe3f0295358f70e3a69fdb/FAST25-release/traces/synthetic_trace.jsonl",
            file_name="synthetic_trace.jsonl",
            size_bytes=1_136_313,
            sha256="bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
            license="Apache-2.0 (github.com/kvcache-ai/Mooncake)",
            citation='Qin et al., "Mooncake: Trading More Storage for Less Computation", FAST 2025',
            description="Mooncake synthetic trace: about 17 minutes, 3,993 long-prompt requests",
        ),
    )
}


class TraceFetchError(Exception):
    """A named trace that could not be fetched or verified; the message is one line naming the URL."""


@dataclass(frozen=True)
class Fetched:
    """A verified local copy of a named trace."""

    trace: PublicTrace
    path: Path
    source_url: str
    downloaded: bool  # False: it was already in the cache

    def provenance(self) -> str:
        """Where the file came from and under which terms, for stderr."""
        how = "downloaded" if self.downloaded else "cached"
        return (
            f"trace {self.trace.name}: {self.trace.description}; {how} from {self.source_url} to {self.path} "
            f"(sha256 verified). License: {self.trace.license}. Cite: {self.trace.citation}."
        )


def cache_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_CACHE_HOME/tokenscale/traces`, else `~/.cache/tokenscale/traces`."""
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "tokenscale" / "traces"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    name: str,
    directory: Path,
    base_url: str | None = None,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    progress: Callable[[str], None] = lambda _: None,
) -> Fetched:
    """The verified local copy of trace `name`: from the cache, else downloaded (from `base_url` when given)."""
    trace = CATALOG[name]
    url = f"{base_url.rstrip('/')}/{trace.file_name}" if base_url else trace.url
    target = directory / trace.file_name
    if target.is_file() and target.stat().st_size == trace.size_bytes and _sha256(target) == trace.sha256:
        return Fetched(trace, target, url, downloaded=False)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, partial_name = tempfile.mkstemp(dir=directory, prefix=f".{trace.file_name}.")
    except OSError as err:
        raise TraceFetchError(f"cannot write the trace cache {directory}: {err.strerror or err}") from None
    partial = Path(partial_name)
    progress(f"downloading trace {name} from {url} ({trace.size_bytes / 1e6:.1f} MB) …")
    try:
        with os.fdopen(handle, "wb") as part:
            size, sha256 = _download(url, part, trace.size_bytes, timeout_s)
        if size != trace.size_bytes or sha256 != trace.sha256:
            got = f"{size} bytes" if size != trace.size_bytes else f"sha256 {sha256}"
            raise TraceFetchError(
                f"{url}: checksum mismatch: got {got}, expected {trace.size_bytes} bytes with sha256 {trace.sha256} "
                "(the download was corrupted or the published file changed); nothing was cached"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return Fetched(trace, target, url, downloaded=True)


def _download(url: str, out: BinaryIO, limit_bytes: int, timeout_s: float) -> tuple[int, str]:
    """Stream `url` into `out`, stopping past `limit_bytes`; (bytes read, their sha256)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (https, or a test's loopback)
            for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                size += len(chunk)
                if size > limit_bytes:
                    break
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as err:
        raise TraceFetchError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise TraceFetchError(f"cannot download {url}: {err.reason}") from None
    except (TimeoutError, OSError) as err:
        raise TraceFetchError(f"cannot download {url}: {err}") from None
    return size, digest.hexdigest()

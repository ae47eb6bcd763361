"""Scrubbing: a copy of run directories that names no host, address, pod or person, and
still correlates and scores exactly like the original (docs/scrub.md).

`scrub(paths, out, key_file)` copies every run below `paths` into `out`, in the hive layout
tag=/scenario=/run=, one Parquet file at a time (batch by batch), and

  * replaces identities with keyed pseudonyms: a readable prefix per kind (ip-, host-,
    pod-, ns-, ctr-, uid-, dns-, comm-, url-, path-, user-) and the first 12 hex digits of
    HMAC-SHA256(key, kind + value). The same key and value give the same pseudonym in every
    table and run, so each join the analysis makes (pod, node, connection tuple, DNS name =
    server.address) holds on the copy;
  * keeps span attributes on an allow-list only (ALLOWED_ATTRIBUTES), pseudonymizing the
    allowed ones that name an address, a host or a URL;
  * scrubs free text (span names and status messages, request errors, kernel details other
    than DNS names): URLs, IP addresses, dotted host names, home directories, and every
    address, host, pod or DNS name seen in the run's own columns;
  * keeps the rest as recorded: ids, timestamps, numbers, signal, service and model names,
    labels and request metrics. They carry no identity, and the analysis reads them.

Addresses stay text. saddr/daddr and the span address columns are strings in the schema
(runfmt.schema) and the analysis only compares them for equality, so an address becomes a
pseudonym string; `family` still tells v4 from v6. Mapping addresses into a reserved range
(198.18.0.0/15 has 17 bits) would collide within a busy run and join connections that never
met.

A column the rules below do not know, if it can hold text, stops the scrub (DataError):
a new column must be classified here before its runs can be published.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analyze.correlate import OUTPUTS
from runfmt.errors import ConfigError, DataError
from runfmt.manifest import MANIFEST, RECORDING_LOCK, tool_version, write_manifest
from runfmt.schema import TABLES

SCRUB_VERSION = 1
MIN_KEY_BYTES = 16
KEY_HINT = "create one with: head -c 32 /dev/urandom > FILE (keep it private, outside what you publish)"
DIGEST_HEX = 12  # 48 bits: no collision to expect among the distinct values of many runs
BATCH_ROWS = 65_536

PREFIX = {"ip": "ip", "host": "host", "pod": "pod", "ns": "ns", "container": "ctr", "uid": "uid",
          "dns": "dns", "comm": "comm", "url": "url", "path": "path", "user": "user"}
# kinds whose values are replaced wherever they show up in free text as a whole word; names
# such as a container `dns` or a comm `sh` are ordinary words, so only their columns change
STRONG = ("ip", "url", "uid", "pod", "host", "dns")

# Span attributes kept (as stored in the `attributes` maps of spans and span_resources, resource
# ones as resource.<key>).
# Only these are needed or safe: outcome, retry and GenAI usage metadata, the connection
# (addresses pseudonymized), DNS question metadata. Every other attribute is dropped: prompts
# and completions (gen_ai.prompt, gen_ai.input.messages ...), response and instance ids,
# url.path/url.query, the lab's own lab.* annotations. The analysis reads none of the map:
# what it needs is in typed columns (runfmt.schema.SPANS).
ALLOWED_ATTRIBUTES = frozenset({
    # HTTP and RPC outcome, retries
    "http.request.method", "http.method", "http.response.status_code", "http.status_code", "http.route",
    "http.request.resend_count", "error.type", "rpc.system", "rpc.service", "rpc.method",
    "rpc.grpc.status_code",
    # GenAI request metadata and usage, never content
    "gen_ai.system", "gen_ai.provider.name", "gen_ai.operation.name", "gen_ai.request.model",
    "gen_ai.response.model", "gen_ai.request.max_tokens", "gen_ai.request.temperature", "gen_ai.request.top_p",
    "gen_ai.request.stream", "gen_ai.response.finish_reasons", "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens",
    "gen_ai.server.time_to_first_token", "gen_ai.response.time_to_first_chunk",
    "gen_ai.latency.time_to_first_token",
    # the connection; addresses and URLs are pseudonymized (ATTRIBUTE_KINDS)
    "server.address", "server.port", "client.address", "client.port", "network.peer.address",
    "network.peer.port", "network.local.address", "network.local.port", "network.transport", "network.type",
    "network.protocol.name", "network.protocol.version", "net.peer.name", "net.peer.port", "net.sock.peer.addr",
    "net.sock.peer.port", "url.full", "http.url", "url.scheme",
    # DNS server spans
    "dns.question.name", "dns.question.type", "dns.response_code",
    # process and thread ids, and resource attributes that failed their typed column
    "process.pid", "thread.id", "resource.process.pid", "resource.host.name", "resource.k8s.node.name",
    "resource.k8s.pod.name", "resource.k8s.namespace.name", "resource.k8s.container.name", "resource.k8s.pod.uid",
    "resource.telemetry.sdk.name", "resource.telemetry.sdk.version",
})
# allowed attributes whose values name something: kind, or "address" (ip or dns by value)
ATTRIBUTE_KINDS = {
    "server.address": "address", "client.address": "address", "network.peer.address": "address",
    "network.local.address": "address", "net.peer.name": "address", "net.sock.peer.addr": "address",
    "dns.question.name": "address", "url.full": "url", "http.url": "url",
    "resource.host.name": "host", "resource.k8s.node.name": "host", "resource.k8s.pod.name": "pod",
    "resource.k8s.namespace.name": "ns", "resource.k8s.container.name": "container", "resource.k8s.pod.uid": "uid",
}

# text columns of every table a run holds (runfmt.schema, the correlation outputs), by
# name: a kind, "address", "url", "text" (free text), "detail", "attributes", or "keep"
COLUMN_RULES = {
    "comm": "comm", "pod": "pod", "k8s_pod_name": "pod", "namespace": "ns", "k8s_namespace_name": "ns",
    "container": "container", "k8s_container_name": "container", "node": "host", "host_name": "host",
    "k8s_node_name": "host", "k8s_pod_uid": "uid",
    "saddr": "address", "daddr": "address", "server_address": "address", "network_peer_address": "address",
    "client_address": "address", "url_full": "url",
    "name": "text", "status_message": "text", "error": "text",
    "detail": "detail", "attributes": "attributes",
    **dict.fromkeys((
        "signal", "kind", "trace_id", "span_id", "parent_span_id", "event_trace_id", "event_span_id", "status_code",
        "service_name", "scope_name", "gen_ai_provider_name", "gen_ai_operation_name", "gen_ai_request_model",
        "gen_ai_response_model", "http_request_method", "tier", "request_id", "phase", "prompt_class", "status",
        "run_id", "scenario", "domain", "target", "intensity", "resource_id"), "keep"),
}

# the files of a run directory scrub knows (the tables, then what sloan correlate writes
# beside them); anything else is left out, never copied
RUN_FILES = tuple(pattern for _, pattern in TABLES.values()) + tuple(OUTPUTS)

# manifest fields: host fields that describe the machine, not who it is
HOST_KEPT = frozenset({"kernel", "machine", "cpus"})
MANIFEST_PATHS = ("pods_file", "cgroup_filter")  # paths of the recording host

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>(){}\[\]]+")
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?=[:0-9A-Fa-f]*[0-9A-Fa-f])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
                   r"(?:%[\w.-]+)?(?![\w:])")
_HOME = re.compile(r"(?:(?<=/home/)|(?<=/Users/))[^/\s:\"']+")
_WORD = re.compile(r"[\w.-]+")
_DOTTED_HOST = re.compile(r"(?<![\w.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*"
                          r"(?![\w-]|\.\w)")
_RUNQUEUE = re.compile(r"(cpu=\d+ after=)(.*)", re.DOTALL)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def read_key(path: Path) -> bytes:
    """The key file's bytes; ConfigError when missing, unreadable or shorter than 16 bytes."""
    path = Path(path)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist", KEY_HINT) from None
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}", KEY_HINT) from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"key file {path} holds {len(key)} byte(s); a key needs at least {MIN_KEY_BYTES}",
                          KEY_HINT)
    return key


def key_fingerprint(key: bytes) -> str:
    """Names the key in a manifest without revealing it: 8 hex digits of its SHA-256."""
    return hashlib.sha256(key).hexdigest()[:8]


class Pseudonyms:
    """Keyed, deterministic pseudonyms, and the free-text rules built on them."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._cache: dict[tuple[str, str], str] = {}
        self.known: dict[str, tuple[int, str]] = {}  # value of a STRONG kind -> (rank, pseudonym)

    def pseudonym(self, kind: str, value: str) -> str:
        if value == "":
            return value
        got = self._cache.get((kind, value))
        if got is None:
            digest = hmac.new(self._key, f"{kind}\0{value}".encode("utf-8", "surrogatepass"), hashlib.sha256)
            got = self._cache[(kind, value)] = f"{PREFIX[kind]}-{digest.hexdigest()[:DIGEST_HEX]}"
            if kind in STRONG:
                rank = STRONG.index(kind)
                if value not in self.known or rank < self.known[value][0]:
                    self.known[value] = (rank, got)
        return got

    def address(self, value: str) -> str:
        """An IP address or a DNS name, told apart by its text, so a name resolved in a DNS
        event and the same name in server.address get the same pseudonym."""
        return self.pseudonym("ip" if _is_ip(value) else "dns", value)

    def apply(self, rule: str, value: str) -> str:
        if rule == "address":
            return self.address(value)
        if rule == "text":
            return self.text(value)
        return self.pseudonym(rule, value)

    def text(self, value: str, hosts: bool = True) -> str:
        """Free text: URLs, IP addresses, home directories and known identities replaced;
        with `hosts`, dotted host names too (not in the manifest, whose library paths such
        as libssl.so.3 would look like one)."""
        value = _URL.sub(lambda m: self.pseudonym("url", m.group()), value)
        value = _IPV4.sub(self._ip_match, value)
        value = _IPV6.sub(self._ip_match, value)
        value = _HOME.sub(lambda m: self.pseudonym("user", m.group()), value)
        value = _WORD.sub(self._word, value)
        if hosts:
            value = _DOTTED_HOST.sub(lambda m: self.pseudonym("dns", m.group()), value)
        return value

    def _ip_match(self, m: re.Match) -> str:
        return self.pseudonym("ip", m.group()) if _is_ip(m.group()) else m.group()

    def _word(self, m: re.Match) -> str:
        hit = self.known.get(m.group())
        return hit[1] if hit else m.group()

    def counts(self) -> dict[str, int]:
        """Distinct values replaced, per kind."""
        out = dict.fromkeys(PREFIX, 0)
        for kind, _ in self._cache:
            out[kind] += 1
        return {k: v for k, v in out.items() if v}


# --- columns ------------------------------------------------------------------------------


def _has_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _has_text(t.value_type)
    if pa.types.is_map(t):
        return _has_text(t.key_type) or _has_text(t.item_type)
    if pa.types.is_struct(t):
        return any(_has_text(f.type) for f in t)
    if hasattr(t, "value_type"):  # list types
        return _has_text(t.value_type)
    # binary counts as text: it may hold anything; "view" covers string_view/binary_view
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or "view" in str(t))


def _is_str(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _decoded(t: pa.DataType) -> pa.DataType:
    """A dictionary's value type (the spans' per-resource texts are dictionary-encoded)."""
    return t.value_type if pa.types.is_dictionary(t) else t


def _map_unique(arr: pa.Array, fn: Callable[[str], str]) -> pa.Array:
    """fn applied once per distinct value; nulls stay null."""
    if len(arr) == 0 or arr.null_count == len(arr):
        return arr
    uniq = pc.unique(arr)
    mapped = pa.array([None if v is None else fn(v) for v in uniq.to_pylist()], arr.type)
    return pc.take(mapped, pc.index_in(arr, value_set=uniq))


def _changed(old: pa.Array, new: pa.Array) -> int:
    return int(pc.sum(pc.not_equal(old, new)).as_py() or 0)


@dataclass
class _Counts:
    rows: int = 0
    values: int = 0  # cells and map entries replaced or dropped


class _TableScrubber:
    """Applies COLUMN_RULES to the batches of one Parquet file."""

    def __init__(self, p: Pseudonyms, allow: frozenset[str], path: Path, schema: pa.Schema) -> None:
        self.p, self.allow, self.path, self.schema = p, allow, path, schema
        for f in schema:
            if not _has_text(f.type):
                continue
            rule = COLUMN_RULES.get(f.name)
            if rule is None:
                raise DataError(f"{path}: column {f.name} ({f.type}) may hold text scrub has no rule for",
                                "add the column to COLUMN_RULES in analyze/scrub.py (keep it, or say what it "
                                "names), or leave that file out")
            plain = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
            ok = (pa.types.is_map(plain) and _is_str(plain.key_type) and _is_str(plain.item_type)
                  if rule == "attributes" else rule == "keep" or _is_str(plain))
            if not ok:
                raise DataError(f"{path}: column {f.name} is {f.type}, scrub handles it as text only",
                                "scrub knows the schemas of runfmt/schema.py; "
                                "convert the file to them first")

    def batch(self, batch: pa.RecordBatch, counts: _Counts) -> pa.RecordBatch:
        columns = []
        for f, col in zip(self.schema, batch.columns):
            rule = COLUMN_RULES.get(f.name, "keep")
            if rule == "keep" or not _has_text(f.type):
                columns.append(col)
                continue
            arr = col.dictionary_decode() if pa.types.is_dictionary(col.type) else col
            if rule == "attributes":
                new, n = self._attributes(arr)
            else:
                if rule == "detail":
                    new = self._detail(arr, batch)
                else:
                    new = _map_unique(arr, lambda v, r=rule: self.p.apply(r, v))
                n = _changed(arr, new)
            counts.values += n
            columns.append(new.cast(f.type) if new.type != f.type else new)
        counts.rows += batch.num_rows
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def _detail_value(self, signal: str, detail: str) -> str:
        if signal == "dns":  # the name getaddrinfo was asked for
            return self.p.address(detail)
        if signal == "runqueue":  # "cpu=N after=<comm of the task before>"
            m = _RUNQUEUE.fullmatch(detail)
            if m:
                return m.group(1) + self.p.pseudonym("comm", m.group(2))
        return self.p.text(detail)  # TCP states, TLS and reclaim details pass unchanged

    def _detail(self, detail: pa.Array, batch: pa.RecordBatch) -> pa.Array:
        if "signal" in batch.schema.names:
            signal = batch.column("signal")
            signal = signal.dictionary_decode() if pa.types.is_dictionary(signal.type) else signal
            signal = pc.fill_null(signal.cast(pa.string()), "")
        else:
            signal = pa.array([""] * len(detail), pa.string())
        joined = pc.binary_join_element_wise(signal, detail.cast(pa.string()), "\0")  # null where detail is
        new = _map_unique(joined, lambda v: self._detail_value(*v.split("\0", 1)))
        return new.cast(detail.type)

    def _attributes(self, arr: pa.MapArray) -> tuple[pa.Array, int]:
        """Allowed entries only, identifying values pseudonymized; (new array, entries changed
        or dropped)."""
        offsets = arr.offsets.to_numpy()
        lo, hi = int(offsets[0]), int(offsets[-1])
        keys, items = arr.keys.slice(lo, hi - lo), arr.items.slice(lo, hi - lo)
        parents = np.repeat(np.arange(len(arr)), np.diff(offsets))
        keep = pc.fill_null(pc.is_in(keys, value_set=pa.array(sorted(self.allow), keys.type)), False)
        keys_k, items_k = keys.filter(keep), items.filter(keep)
        parents_k = parents[keep.to_numpy(zero_copy_only=False)]
        joined = pc.binary_join_element_wise(keys_k.cast(pa.string()), items_k.cast(pa.string()), "\0")
        new_items = _map_unique(joined, self._attribute_value).cast(items.type)  # null values stay null
        changed = (len(keys) - len(keys_k)) + _changed(items_k, new_items)
        new_offsets = np.zeros(len(arr) + 1, np.int32)
        np.cumsum(np.bincount(parents_k, minlength=len(arr)), out=new_offsets[1:])
        nulls = {"mask": arr.is_null()} if arr.null_count else {}
        new = pa.MapArray.from_arrays(pa.array(new_offsets), keys_k, new_items, **nulls)
        return (new.cast(arr.type) if new.type != arr.type else new), changed

    def _attribute_value(self, joined: str) -> str:
        key, value = joined.split("\0", 1)
        kind = ATTRIBUTE_KINDS.get(key)
        return value if kind is None else self.p.apply(kind, value)


# --- identities seen in a run, for free text ------------------------------------------------

# columns read before a run is scrubbed, so its free text knows its pods, hosts and addresses
_SEED_COLUMNS = {c: r for c, r in COLUMN_RULES.items() if r in ("pod", "host", "uid", "address", "url")}


def _seed(p: Pseudonyms, files: list[Path], manifest: dict) -> None:
    for value in (manifest.get("node"), (manifest.get("host") or {}).get("hostname")):
        if isinstance(value, str):
            p.pseudonym("host", value)
    for path in files:
        pf = _parquet(path)
        names = [n for n in pf.schema_arrow.names
                 if n in _SEED_COLUMNS and _is_str(_decoded(pf.schema_arrow.field(n).type))]
        detail = "detail" in pf.schema_arrow.names and "signal" in pf.schema_arrow.names
        if not names and not detail:
            continue
        for batch in _batches(pf, path, columns=names + (["signal", "detail"] if detail else [])):
            for name in names:
                for v in pc.unique(batch.column(name)).to_pylist():
                    if v is not None:
                        p.apply(_SEED_COLUMNS[name], v)
            if detail:
                dns = pc.filter(batch.column("detail"), pc.equal(batch.column("signal"), "dns"))
                for v in pc.unique(dns).to_pylist():
                    if v is not None:
                        p.address(v)


# --- manifest --------------------------------------------------------------------------------


def _scrub_json(p: Pseudonyms, value, path: tuple[str, ...] = ()):
    if isinstance(value, dict):
        return {p.text(k, hosts=False): _scrub_json(p, v, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_json(p, v, path) for v in value]
    if not isinstance(value, str):
        return value
    if path in (("node",), ("host", "hostname")):
        return p.pseudonym("host", value)
    if len(path) == 2 and path[0] == "host":  # anything but the machine's description names the host
        return value if path[1] in HOST_KEPT else p.pseudonym("host", value)
    if len(path) == 1 and path[0] in MANIFEST_PATHS:
        return p.pseudonym("path", value)
    return p.text(value, hosts=False)


def _count_changes(a, b) -> int:
    if isinstance(a, dict) and isinstance(b, dict):
        return sum(_count_changes(v, w) for v, w in zip(a.values(), b.values()))
    if isinstance(a, list) and isinstance(b, list):
        return sum(_count_changes(v, w) for v, w in zip(a, b))
    return int(a != b)


# --- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunScrub:
    source: Path
    dest: Path  # where it was written (inside the output folder)
    files: int
    rows: int
    values: int
    left_out: tuple[str, ...] = ()  # files of the run scrub does not know, not copied

    def to_dict(self) -> dict:
        return {"source": str(self.source), "dest": str(self.dest), "files": self.files, "rows": self.rows,
                "values": self.values, "left_out": list(self.left_out)}


@dataclass(frozen=True)
class ScrubSummary:
    out: Path
    key_fingerprint: str
    allow_attributes: tuple[str, ...]
    runs: tuple[RunScrub, ...] = ()
    pseudonyms: dict[str, int] = field(default_factory=dict)  # kind -> distinct values replaced

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.runs)

    @property
    def values(self) -> int:
        return sum(r.values for r in self.runs)

    def to_dict(self) -> dict:
        return {"out": str(self.out), "key_fingerprint": self.key_fingerprint, "runs_scrubbed": len(self.runs),
                "rows": self.rows, "values": self.values, "pseudonyms": dict(self.pseudonyms),
                "allow_attributes": list(self.allow_attributes), "runs": [r.to_dict() for r in self.runs]}


def _inside(p: Path, parent: Path) -> bool:
    return p == parent or parent in p.parents


def _hive_dest(run_dir: Path, manifest: dict) -> Path:
    """tag=/scenario=/run= as the run's own folders say, else from its manifest."""
    parts = []
    for name in reversed(Path(run_dir).absolute().parts):
        if "=" not in name or name.startswith("="):
            break
        parts.insert(0, name)
    if parts and parts[-1].startswith("run="):
        return Path(*parts)
    names = (f"tag={manifest.get('tag') or 'untagged'}", f"scenario={manifest.get('scenario') or 'unknown'}",
             f"run={manifest.get('run_id') or Path(run_dir).name}")
    for name in names:
        if "/" in name or os.sep in name or name.split("=", 1)[1] in ("", ".", ".."):
            raise DataError(f"{run_dir}: cannot name its output folder {name!r} from the manifest",
                            "put the run in a tag=/scenario=/run= folder layout first")
    return Path(*names)


def _run_files(run_dir: Path) -> tuple[list[Path], list[str]]:
    """The known data files of a run, and the other files (left out)."""
    known: list[Path] = []
    for pattern in RUN_FILES:
        known.extend(sorted(run_dir.glob(pattern)))
    # the recording lock is an empty file the recorder held, not data: neither copied nor reported
    taken = set(known) | {run_dir / MANIFEST, run_dir / RECORDING_LOCK}
    other = sorted(str(f.relative_to(run_dir)) for f in run_dir.rglob("*") if f.is_file() and f not in taken)
    return known, other


def _parquet(src: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(src)
    except (OSError, pa.ArrowException) as exc:  # pyarrow raises several types for a damaged file
        raise DataError(f"{src}: not readable Parquet ({exc})",
                        "repair or remove that file, then scrub again") from None


def _batches(pf: pq.ParquetFile, src: Path, columns: list[str] | None = None):
    """The file's record batches. A damaged data page shows only here, as the footer read:
    named with its file; errors of the caller's loop body pass through untouched."""
    try:
        yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{src}: damaged data page ({' '.join(str(exc).split())})",
                        "repair or remove that file, then scrub again") from None


def _scrub_file(p: Pseudonyms, allow: frozenset[str], src: Path, dst: Path) -> _Counts:
    counts = _Counts()
    pf = _parquet(src)
    schema = pf.schema_arrow
    scrubber = _TableScrubber(p, allow, src, schema)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(dst, schema, compression="zstd") as writer:
        for batch in _batches(pf, src):
            writer.write_batch(scrubber.batch(batch, counts))
    return counts


def _scrub_run(p: Pseudonyms, allow: frozenset[str], run_dir: Path, manifest: dict, dest: Path,
               record: dict) -> RunScrub:
    files, other = _run_files(run_dir)
    if any(f.parent.name == "otlp_raw" for f in files):  # request bodies as sent: nothing in them is scrubbed
        raise DataError(f"{run_dir}: its spans are still raw OTLP bodies (otlp_raw/), which scrub cannot copy",
                        f"flatten them first: slocap repair {run_dir}")
    _seed(p, files, manifest)
    counts = _Counts()
    for src in files:
        c = _scrub_file(p, allow, src, dest / src.relative_to(run_dir))
        counts.rows += c.rows
        counts.values += c.values
    previous = manifest.pop("scrubbed", None)
    scrubbed = _scrub_json(p, manifest)
    counts.values += _count_changes(manifest, scrubbed)
    scrubbed["scrubbed"] = {**record, **({"previous": previous} if previous else {})}
    write_manifest(dest, scrubbed)
    return RunScrub(run_dir, dest, len(files) + 1, counts.rows, counts.values, tuple(other))


def _check_out(out: Path, inputs: Iterable[Path]) -> None:
    out_abs = out.resolve()
    for p in inputs:
        if _inside(out_abs, p.resolve()):
            raise DataError(f"--out {out} lies inside the input {p}",
                            "pass a folder outside the runs you scrub: scrub never writes into its input")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file", "pass a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise DataError(f"--out {out} is not empty",
                        "pass a new or empty folder: scrub never mixes its output with other files")


def scrub(paths: Iterable[Path], out: Path, key_file: Path, *, allow_attributes: Iterable[str] = (),
          progress: Callable[[int, int, Path | None], None] | None = None) -> ScrubSummary:
    """Scrubs every run below `paths` into `out` (new or empty). The output appears whole or
    not at all: it is written beside `out` under a hidden name and renamed at the end.

    `allow_attributes` adds span attribute names to ALLOWED_ATTRIBUTES. `progress(done,
    total, run_dir)` is called before each run and once more at the end (run_dir None)."""
    from analyze.session import find_runs
    from runfmt.manifest import read_manifest

    paths = [Path(p) for p in paths]
    out = Path(out)
    run_dirs = find_runs(paths)
    _check_out(out, paths + run_dirs)
    key = read_key(Path(key_file))
    allow = ALLOWED_ATTRIBUTES | frozenset(allow_attributes)
    p = Pseudonyms(key)
    record = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "scrub_version": SCRUB_VERSION,
              "tool_version": tool_version(), "key_fingerprint": key_fingerprint(key),
              "pseudonym": f"<kind>-<first {DIGEST_HEX} hex digits of HMAC-SHA256(key, kind, value)>",
              "allow_attributes": sorted(allow)}

    dests: dict[Path, tuple[Path, dict]] = {}  # output folder -> (run, its manifest)
    for run_dir in run_dirs:
        manifest = read_manifest(run_dir, "fix that run's manifest.json, or leave the run out")
        rel = _hive_dest(run_dir, manifest)
        if rel in dests:
            raise DataError(f"{run_dir} and {dests[rel][0]} would both be written to {rel}",
                            "scrub them separately, into different --out folders")
        dests[rel] = (run_dir, manifest)

    out_abs = out.absolute()
    tmp = out_abs.parent / f".{out_abs.name}.scrub-{os.getpid()}"
    results = []
    try:
        out_abs.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for i, (rel, (run_dir, manifest)) in enumerate(dests.items()):
            if progress:
                progress(i, len(dests), run_dir)
            r = _scrub_run(p, allow, run_dir, manifest, tmp / rel, record)
            results.append(RunScrub(r.source, out / rel, r.files, r.rows, r.values, r.left_out))
        if out_abs.is_dir():
            out_abs.rmdir()  # empty, checked above
        os.rename(tmp, out_abs)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"scrub into {out} failed: {exc.strerror or exc}",
                        "check that the runs are readable and that --out is writable, with room for the copy") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        progress(len(dests), len(dests), None)
    return ScrubSummary(out, record["key_fingerprint"], tuple(sorted(allow)), tuple(results), p.counts())

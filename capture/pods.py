"""Pod identity of kernel events: cgroup id → cgroup path → kubelet pod and container.

A kernel event carries the inode number of its cgroup-v2 directory
(bpf_get_current_cgroup_id). The kubelet names a pod's directory after the pod's
UID and QoS class and the runtime names a container's directory after the
container id, so one walk of the cgroup tree gives pod and container for every
id; the kubelet's pod list (its /pods endpoint, saved to a file) adds names.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runfmt.errors import CaptureError, DataError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

MOUNTINFO = Path("/proc/self/mountinfo")

# A pod UID as the kubelet writes it: an API UUID (the systemd driver turns its
# dashes into underscores, since '-' means nesting in a slice name) or, for a
# static pod, the 32-hex hash of its manifest.
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
# systemd driver: [<root>-]kubepods[-<qos>]-pod<uid>.slice; a --cgroup-root adds
# the prefix (kind: "kubelet-kubepods-...").
_SYSTEMD_POD = re.compile(rf"(?:.+-)?kubepods(?:-(?P<qos>burstable|besteffort))?-pod(?P<uid>{_UID})\.slice")
# cgroupfs driver: pod<uid> right under kubepods/ (guaranteed) or kubepods/<qos>/
_CGROUPFS_POD = re.compile(rf"pod(?P<uid>{_UID})")
# the directory below the pod's: <prefix>-<id>.scope (systemd) or [<prefix>-]<id> (cgroupfs)
_CONTAINER = re.compile(r"(?:(?P<prefix>cri-containerd|crio-conmon|crio|docker)-)?(?P<cid>[0-9a-f]{64})(?:\.scope)?")
_RUNTIMES = {"cri-containerd": "containerd", "crio": "cri-o", "crio-conmon": "cri-o", "docker": "docker"}

_JSON_TYPES = {str: "a string", list: "an array", dict: "an object"}
_PODS_HINT = ("save the kubelet's pod list and pass that file: "
              "kubectl get --raw /api/v1/nodes/<node>/proxy/pods > pods.json")


@dataclass(frozen=True)
class PodCgroup:
    """What a kubelet cgroup path says about the pod and container inside it."""

    pod_uid: str  # dashed: 8-4-4-4-12 for API pods, 32 hex for static pods
    qos_class: str  # "guaranteed" | "burstable" | "besteffort"
    container_id: str | None = None  # None for the pod-level cgroup
    runtime: str | None = None  # "containerd" | "cri-o" | "docker"; None when the name does not say
    # CRI-O runs conmon in crio-conmon-<id>.scope beside the container it watches.
    # Its work is the pod's overhead, not the workload's, so it gets no
    # container_id (blaming the container would mislead); this keeps the link.
    monitor_of: str | None = None


@dataclass(frozen=True)
class PodInfo:
    name: str
    namespace: str
    qos_class: str | None  # lower case, as in PodCgroup; None while the pod is pending
    containers: dict[str, str] = field(default_factory=dict)  # container id → container name


@dataclass(frozen=True)
class Identity:
    pod: str  # pod name, or its UID when the pod list does not know it
    namespace: str | None
    container: str | None  # container name, or the id's first 12 hex digits
    pod_uid: str
    container_id: str | None
    qos_class: str
    node: str


def _components(path: str) -> Iterator[str]:
    for part in path.split("/"):
        # a runc using cgroupfs that is handed containerd's systemd-style
        # "slice:prefix:id" (a cgroup driver mismatch) makes one directory of it
        slice_, sep, rest = part.partition(":")
        prefix, sep2, cid = rest.partition(":")
        if sep and sep2:
            yield slice_
            yield f"{prefix}-{cid}"
        elif part:
            yield part


def _pod(parts: list[str], i: int) -> tuple[str, str] | None:
    """(uid, qos) when parts[i] is a pod's directory."""
    if m := _SYSTEMD_POD.fullmatch(parts[i]):
        return m["uid"], m["qos"] or "guaranteed"
    if m := _CGROUPFS_POD.fullmatch(parts[i]):
        # only under kubepods: other tools may name directories pod<uuid> too
        if parts[i - 1:i] == ["kubepods"]:
            return m["uid"], "guaranteed"
        if parts[i - 2:i] in (["kubepods", "burstable"], ["kubepods", "besteffort"]):
            return m["uid"], parts[i - 1]
    return None


def parse_cgroup_path(path: str) -> PodCgroup | None:
    """Pod and container of a cgroup path named by the kubelet, None for any other path.

    Prefixes are ignored (a kind node's cgroup seen from the host, a --cgroup-root);
    directories below the container's (ones the container made) count as the
    container. With nested pods the outermost wins: it is the one this node's
    kubelet knows.
    """
    parts = list(_components(path))
    for i in range(len(parts)):
        pod = _pod(parts, i)
        if pod is None:
            continue
        uid, qos = pod[0].replace("_", "-"), pod[1]
        below = _CONTAINER.fullmatch(parts[i + 1]) if i + 1 < len(parts) else None
        if below is None:
            return PodCgroup(uid, qos)
        runtime = _RUNTIMES.get(below["prefix"])
        if below["prefix"] == "crio-conmon":
            return PodCgroup(uid, qos, runtime=runtime, monitor_of=below["cid"])
        return PodCgroup(uid, qos, below["cid"], runtime)
    return None


def cgroup2_mount(mountinfo: Path = MOUNTINFO) -> Path | None:
    """Mount point of the cgroup-v2 hierarchy: /sys/fs/cgroup, or .../unified on hybrid hosts."""
    for line in mountinfo.read_text().splitlines():
        fields, sep, rest = line.partition(" - ")
        if sep and rest.split()[:1] == ["cgroup2"]:
            # mountinfo escapes space, tab, newline and backslash as \ooo
            return Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields.split()[4]))
    return None


def load_pods_mapping(path: str | os.PathLike[str]) -> dict[str, PodInfo]:
    """Pod UID → PodInfo from a saved PodList (the kubelet's /pods, or kubectl get pods -o json)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read pods file {path}: {exc.strerror}", _PODS_HINT) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"pods file {path} is not JSON: {exc}", _PODS_HINT) from exc

    def get(obj: dict, key: str, where: str, type_: type, optional: bool = False) -> Any:
        value = obj.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, type_):
            problem = "is missing" if value is None else f"should be {_JSON_TYPES[type_]}, not {value!r:.40}"
            raise DataError(f"pods file {path}: {where}.{key} {problem}", _PODS_HINT)
        return value

    if not isinstance(doc, dict):
        raise DataError(f"pods file {path}: $ should be an object (a PodList), not {doc!r:.40}", _PODS_HINT)
    pods: dict[str, PodInfo] = {}
    for i, item in enumerate(get(doc, "items", "$", list)):
        where = f"$.items[{i}]"
        if not isinstance(item, dict):
            raise DataError(f"pods file {path}: {where} should be an object, not {item!r:.40}", _PODS_HINT)
        meta = get(item, "metadata", where, dict)
        status = get(item, "status", where, dict, optional=True) or {}
        containers: dict[str, str] = {}
        for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
            for j, cs in enumerate(get(status, key, f"{where}.status", list, optional=True) or []):
                cwhere = f"{where}.status.{key}[{j}]"
                if not isinstance(cs, dict):
                    raise DataError(f"pods file {path}: {cwhere} should be an object", _PODS_HINT)
                name = get(cs, "name", cwhere, str)
                # a container that has not started yet has no id
                ref = get(cs, "containerID", cwhere, str, optional=True)
                if not ref:
                    continue
                _scheme, sep, cid = ref.partition("://")
                if not sep or not cid:
                    raise DataError(f"pods file {path}: {cwhere}.containerID should look like "
                                    f"'containerd://<id>', not {ref!r}", _PODS_HINT)
                containers[cid] = name
        qos = get(status, "qosClass", f"{where}.status", str, optional=True)
        uid = get(meta, "uid", f"{where}.metadata", str).lower()
        pods[uid] = PodInfo(name=get(meta, "name", f"{where}.metadata", str),
                            namespace=get(meta, "namespace", f"{where}.metadata", str),
                            qos_class=qos.lower() if qos else None, containers=containers)
    return pods



class PodResolver:
    """Maps cgroup ids to pod identities by walking the cgroup-v2 tree.

    The tree is walked lazily, on the first id not known yet, and again on a
    miss at most once per `reindex_interval` seconds. At most `max_entries`
    resolved ids are cached (least recently used go first); the index of the
    last walk holds only pod cgroups. Not thread-safe: use one per drain thread.
    """

    def __init__(self, cgroup_root: Path | None = None, pods_file: Path | None = None,
                 node: str | None = None, *, max_entries: int = 65536, reindex_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        root = cgroup_root if cgroup_root is not None else cgroup2_mount()
        if root is None:
            raise CaptureError(f"cannot map cgroup ids to pods: no cgroup2 mount in {MOUNTINFO}",
                               "pass the cgroup v2 mount point as the cgroup root")
        if not Path(root).is_dir():
            raise CaptureError(f"cannot map cgroup ids to pods: cgroup root {root} is not a directory",
                               f"pass the cgroup v2 mount point (fstype cgroup2 in {MOUNTINFO})")
        self.cgroup_root = Path(root)
        self.pods = load_pods_mapping(pods_file) if pods_file is not None else {}
        self.node = node if node is not None else socket.gethostname()
        self.walks = 0  # how often the tree was walked
        self._max_entries = max_entries
        self._interval = reindex_interval
        self._clock = clock
        self._walked_at = -math.inf
        self._index: dict[int, PodCgroup] = {}
        self._cache: OrderedDict[int, Identity | None] = OrderedDict()
        self._unsure: set[int] = set()  # missed since the last walk began

    def resolve(self, cgroup_id: int) -> Identity | None:
        cgroup_id = int(cgroup_id)
        if cgroup_id in self._cache:
            self._cache.move_to_end(cgroup_id)
            return self._cache[cgroup_id]
        if cgroup_id not in self._index:
            if len(self._unsure) < self._max_entries:
                self._unsure.add(cgroup_id)
            if self._clock() - self._walked_at < self._interval:
                return None  # not cached: the cgroup may be younger than the last walk
            self._reindex()
            if cgroup_id not in self._index:
                return None  # _reindex cached the miss
        identity = self._identity(self._index[cgroup_id])
        self._remember(cgroup_id, identity)
        return identity

    def columns(self, cgroup_ids: np.ndarray) -> dict[str, pa.Array]:
        """`pod`, `namespace`, `container` for a batch; each distinct id resolved once."""
        import numpy as np
        import pyarrow as pa

        uniq, inverse = np.unique(np.asarray(cgroup_ids, dtype=np.uint64), return_inverse=True)
        identities = [self.resolve(int(u)) for u in uniq]
        rows = pa.array(inverse.ravel().astype(np.int64))
        return {name: pa.array([None if i is None else getattr(i, name) for i in identities],
                               pa.string()).take(rows)
                for name in ("pod", "namespace", "container")}

    def _identity(self, cgroup: PodCgroup) -> Identity:
        info = self.pods.get(cgroup.pod_uid)
        cid = cgroup.container_id
        short = cid[:12] if cid else None  # what crictl and docker ps show
        return Identity(pod=info.name if info else cgroup.pod_uid,
                        namespace=info.namespace if info else None,
                        container=info.containers.get(cid, short) if info and cid else short,
                        pod_uid=cgroup.pod_uid, container_id=cid, qos_class=cgroup.qos_class, node=self.node)

    def _remember(self, cgroup_id: int, identity: Identity | None) -> None:
        self._cache[cgroup_id] = identity
        if len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    def _reindex(self) -> None:
        self._walked_at = self._clock()
        self._index = self._walk()
        self.walks += 1
        # An id asked for before this walk began is that of an event that came
        # earlier still, so its cgroup existed: missing now means not a pod or
        # removed, and the kernel never reuses a cgroup id, so the miss is final.
        for cgroup_id in self._unsure:
            if cgroup_id not in self._index:
                self._remember(cgroup_id, None)
        self._unsure.clear()

    def _walk(self) -> dict[int, PodCgroup]:
        found: dict[int, PodCgroup] = {}
        stack = [(str(self.cgroup_root), "")]
        while stack:
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        path = f"{rel}/{entry.name}"
                        stack.append((entry.path, path))
                        pod = parse_cgroup_path(path)
                        if pod is not None:
                            # readdir's d_ino is the cgroup id, as stat's st_ino: no stat needed
                            found[entry.inode()] = pod
            except OSError:
                continue  # a cgroup removed while we walk: its subtree drops out
        return found

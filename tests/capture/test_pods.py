"""Pod identity from cgroup ids: path parsing, the pod list, the resolver over a tree."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from capture.columns import kernel_events_table
from capture.pods import (
    Identity,
    PodCgroup,
    PodInfo,
    PodResolver,
    cgroup2_mount,
    load_pods_mapping,
    parse_cgroup_path,
)
from runfmt.errors import CaptureError, DataError

# Real paths, copied from where they were reported (source in each comment).
# Columns: path, pod uid, qos, container id, runtime.
PARSED = [
    # systemd driver, containerd (netdata/netdata#4868)
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod55c6c714_b240_4dec_9a45_57b61696ab6e.slice/"
     "cri-containerd-2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36.scope",
     "55c6c714-b240-4dec-9a45-57b61696ab6e", "burstable",
     "2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36", "containerd"),
    ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pode1465238_4518_4c21_832f_fd9f87033dad.slice/"
     "cri-containerd-66be9b2efdf4d85288c319b8c1a2f50d2439b5617e36f45d9d0d0be1381113be.scope",
     "e1465238-4518-4c21-832f-fd9f87033dad", "besteffort",
     "66be9b2efdf4d85288c319b8c1a2f50d2439b5617e36f45d9d0d0be1381113be", "containerd"),
    # a static pod: its UID is the manifest's hash, no dashes (netdata/netdata#4868)
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8daa50c3a64c9ff60bb9eab7b44b56fd.slice/"
     "cri-containerd-2884d57c0e100d7a9a2f9487ce0bc2986bca3430e988af7a4865aff061f51ac5.scope",
     "8daa50c3a64c9ff60bb9eab7b44b56fd", "burstable",
     "2884d57c0e100d7a9a2f9487ce0bc2986bca3430e988af7a4865aff061f51ac5", "containerd"),
    # kind node seen from inside (cgroupRoot /kubelet) (containerd/nri#227)
    ("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
     "kubelet-kubepods-besteffort-pod1e597579_417e_482f_bf65_5fe170c3aebd.slice/"
     "cri-containerd-a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e.scope",
     "1e597579-417e-482f-bf65-5fe170c3aebd", "besteffort",
     "a09bc17f5aa29b0dbdec9ede5f46cf1396d2405917ab02e6f1eb1019f388396e", "containerd"),
    # containerd told "systemd" but runc on cgroupfs: one directory "slice:prefix:id"
    # (containerd/containerd#5226, open-telemetry/opentelemetry-java#4507)
    ("/system.slice/containerd.service/kubepods-burstable-pod7a875b5c_4d3c_4345_ac0f_5c847d8d7129.slice:"
     "cri-containerd:ee05f876e981d258209f91f25f139f7abc13a0246a5f343298572602fea8c7bb",
     "7a875b5c-4d3c-4345-ac0f-5c847d8d7129", "burstable",
     "ee05f876e981d258209f91f25f139f7abc13a0246a5f343298572602fea8c7bb", "containerd"),
    ("/system.slice/containerd.service/kubepods-besteffort-pod0125ec2f_b64a_4868_8f5b_94b56cbab864.slice:"
     "cri-containerd:ee4b20e90ac7f42a10bd004d05646b13d8ab5e2c5e7cbc01abf8006bac016459",
     "0125ec2f-b64a-4868-8f5b-94b56cbab864", "besteffort",
     "ee4b20e90ac7f42a10bd004d05646b13d8ab5e2c5e7cbc01abf8006bac016459", "containerd"),
    # systemd driver, CRI-O (opencontainers/runc#4620)
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda5c1f8d5_1919_434d_add7_4afaafdaef89.slice/"
     "crio-5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c.scope",
     "a5c1f8d5-1919-434d-add7-4afaafdaef89", "burstable",
     "5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c", "cri-o"),
    # minikube's node is a docker container: a /docker/<id> prefix (kubernetes/minikube#11280)
    ("/docker/d6701ec289c56e4391acb11d07474b3139466857a305490575508a8b7a9fcf22/kubepods.slice/"
     "kubepods-besteffort.slice/kubepods-besteffort-pod2ca4a155_3599_498d_bb9d_4446693fa3ea.slice/"
     "crio-358607a37e7ada357032e7f5729c9ae6a3efdb7962acbcbe47ff6a3c5506cb1c.scope",
     "2ca4a155-3599-498d-bb9d-4446693fa3ea", "besteffort",
     "358607a37e7ada357032e7f5729c9ae6a3efdb7962acbcbe47ff6a3c5506cb1c", "cri-o"),
    # systemd driver, docker; guaranteed pods sit right in kubepods.slice
    # (kubernetes TestCGroupParentExtraction, lxc/lxc#3890, kontena/pharos-cluster#440)
    ("/kubepods.slice/kubepods-podd0d034ed_5204_11e7_9710_507b9d27b5d9.slice/"
     "docker-a91b1981b6a4ae463fccd273e3f8665fd911e9abcaa1af27de773afb17ec4344.scope",
     "d0d034ed-5204-11e7-9710-507b9d27b5d9", "guaranteed",
     "a91b1981b6a4ae463fccd273e3f8665fd911e9abcaa1af27de773afb17ec4344", "docker"),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7d4424e6_bb13_42f4_a47a_45a4828bf54d.slice/"
     "docker-d0b3604b67ac7930dd34ba3a796627e3e4717d12309e90a4afe3f38b6816ac98.scope",
     "7d4424e6-bb13-42f4-a47a-45a4828bf54d", "burstable",
     "d0b3604b67ac7930dd34ba3a796627e3e4717d12309e90a4afe3f38b6816ac98", "docker"),
    ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9692aa0e_748e_11e8_8dfa_76d458035df6.slice/"
     "docker-abddff03dfd7710c79a750ce3e730365cbb2c8247a974170c1062683bc3e9152.scope",
     "9692aa0e-748e-11e8-8dfa-76d458035df6", "besteffort",
     "abddff03dfd7710c79a750ce3e730365cbb2c8247a974170c1062683bc3e9152", "docker"),
    # pod-level cgroups (systemd): no container
    ("/kubepods.slice/kubepods-podd0d034ed_5204_11e7_9710_507b9d27b5d9.slice",
     "d0d034ed-5204-11e7-9710-507b9d27b5d9", "guaranteed", None, None),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod55c6c714_b240_4dec_9a45_57b61696ab6e.slice",
     "55c6c714-b240-4dec-9a45-57b61696ab6e", "burstable", None, None),
    # cgroupfs driver: a bare id, the runtime does not show (kubernetes TestCGroupParentExtraction,
    # kinvolk/traceloop#34, google/cadvisor#2540)
    ("/kubepods/burstable/podc4ab0636-521a-11e7-8eea-0e5e65642be0/"
     "9ea9361dc31b0e18f699497a5a78a010eb7bae3f9a2d2b5d3027b37bdaa4b334",
     "c4ab0636-521a-11e7-8eea-0e5e65642be0", "burstable",
     "9ea9361dc31b0e18f699497a5a78a010eb7bae3f9a2d2b5d3027b37bdaa4b334", None),
    ("/kubepods/besteffort/pod91a8fc3a-0ecf-48b4-81bf-78a7275d348c/"
     "f75aff467357c5d0ddd47cb7ad87ed38746e018992586ff66198a5c11218f634",
     "91a8fc3a-0ecf-48b4-81bf-78a7275d348c", "besteffort",
     "f75aff467357c5d0ddd47cb7ad87ed38746e018992586ff66198a5c11218f634", None),
    ("/kubepods/burstable/pod1ff47ee6-9685-4726-ac6f-0ff070c452d6",
     "1ff47ee6-9685-4726-ac6f-0ff070c452d6", "burstable", None, None),
    # cgroupfs, assembled from documented shapes (kubelet: /kubepods/pod<uid> for guaranteed;
    # cri-o#812: crio-<id>; kind's cgroupRoot /kubelet; cri-containerd-<id> as asked in the brief)
    ("/kubepods/podd0d034ed-5204-11e7-9710-507b9d27b5d9/"
     "a91b1981b6a4ae463fccd273e3f8665fd911e9abcaa1af27de773afb17ec4344",
     "d0d034ed-5204-11e7-9710-507b9d27b5d9", "guaranteed",
     "a91b1981b6a4ae463fccd273e3f8665fd911e9abcaa1af27de773afb17ec4344", None),
    ("/kubepods/burstable/pod58662905-8ccc-11e7-a695-c85b76cda386/"
     "crio-1659f887a192f3515dd9b91a41d274abf29ca49de3d2330869131b2d93b45b94",
     "58662905-8ccc-11e7-a695-c85b76cda386", "burstable",
     "1659f887a192f3515dd9b91a41d274abf29ca49de3d2330869131b2d93b45b94", "cri-o"),
    ("/kubelet/kubepods/besteffort/pod91a8fc3a-0ecf-48b4-81bf-78a7275d348c/"
     "cri-containerd-f75aff467357c5d0ddd47cb7ad87ed38746e018992586ff66198a5c11218f634",
     "91a8fc3a-0ecf-48b4-81bf-78a7275d348c", "besteffort",
     "f75aff467357c5d0ddd47cb7ad87ed38746e018992586ff66198a5c11218f634", "containerd"),
    # a cgroup the container made below its own still belongs to it (synthetic)
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod55c6c714_b240_4dec_9a45_57b61696ab6e.slice/"
     "cri-containerd-2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36.scope/container",
     "55c6c714-b240-4dec-9a45-57b61696ab6e", "burstable",
     "2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36", "containerd"),
]


@pytest.mark.parametrize(("path", "uid", "qos", "cid", "runtime"), PARSED)
def test_kubelet_cgroup_paths_parse(path, uid, qos, cid, runtime):
    assert parse_cgroup_path(path) == PodCgroup(uid, qos, cid, runtime)


CONMON = "5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c"


@pytest.mark.parametrize("path", [
    # systemd (opencontainers/runc#4620)
    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda5c1f8d5_1919_434d_add7_4afaafdaef89.slice/"
    f"crio-conmon-{CONMON}.scope",
    # cgroupfs (kata-containers/runtime#1515 shows the pod/crio-conmon-<id> tail)
    f"/kubepods/burstable/poda5c1f8d5-1919-434d-add7-4afaafdaef89/crio-conmon-{CONMON}",
])
def test_conmon_counts_for_the_pod_not_for_the_container(path):
    assert parse_cgroup_path(path) == PodCgroup("a5c1f8d5-1919-434d-add7-4afaafdaef89", "burstable",
                                                container_id=None, runtime="cri-o", monitor_of=CONMON)


@pytest.mark.parametrize("path", [
    "/",
    "",
    "/init.scope",
    "/user.slice/user-1000.slice/session-2.scope",
    "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.socket",
    "/system.slice/ssh.service",
    "/system.slice/containerd.service",
    "/kubepods.slice",
    "/kubepods.slice/kubepods-burstable.slice",
    "/kubepods/burstable",
    # a plain docker container, no pod
    "/system.slice/docker-d0b3604b67ac7930dd34ba3a796627e3e4717d12309e90a4afe3f38b6816ac98.scope",
    # rootless kubelet without QoS cgroups (kubernetes "Rootless" feature-gate patch)
    "/user.slice/user-1001.slice/user@1001.service/user.slice/"
    "cri-containerd-6938564e754ad86269a536ed19172af0eff5f7ff0a41eefc5b433a76f1f38f16.scope",
    # pod<uuid> outside kubepods is someone else's naming
    "/system.slice/pod91a8fc3a-0ecf-48b4-81bf-78a7275d348c",
    "/kubepods/guaranteed/pod91a8fc3a-0ecf-48b4-81bf-78a7275d348c",
])
def test_other_paths_are_not_pods(path):
    assert parse_cgroup_path(path) is None


# --- cgroup v2 mount ---------------------------------------------------------------

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"


@pytest.mark.parametrize(("mountinfo", "expected"), [
    (HYBRID, Path("/sys/fs/cgroup/unified")),
    (UNIFIED, Path("/sys/fs/cgroup")),
    (r"41 31 0:38 / /mnt/my\040cgroup rw - cgroup2 none rw" "\n", Path("/mnt/my cgroup")),
    (HYBRID.replace("cgroup2 cgroup2", "cgroup cgroup"), None),
])
def test_cgroup2_mount_is_found_in_mountinfo(tmp_path, mountinfo, expected):
    (tmp_path / "mountinfo").write_text(mountinfo)
    assert cgroup2_mount(tmp_path / "mountinfo") == expected


def test_a_missing_cgroup_root_is_an_error(tmp_path):
    with pytest.raises(CaptureError) as err:
        PodResolver(cgroup_root=tmp_path / "nope")
    assert err.value.message == f"cannot map cgroup ids to pods: cgroup root {tmp_path / 'nope'} is not a directory"


# --- the pod list ------------------------------------------------------------------

UID = "55c6c714-b240-4dec-9a45-57b61696ab6e"
CID = "2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36"
INIT_CID = "9ea9361dc31b0e18f699497a5a78a010eb7bae3f9a2d2b5d3027b37bdaa4b334"


def pod_list(*items) -> dict:
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": list(items)}


def pod(statuses: list | None = None) -> dict:
    """The kubelet's view of one Running pod with an init container."""
    if statuses is None:
        statuses = [{"name": "server", "containerID": f"containerd://{CID}", "ready": True}]
    return {"metadata": {"name": "rag-api-7d9f", "namespace": "llm", "uid": UID},
            "spec": {"containers": [{"name": "server", "image": "rag-api:1"}]},
            "status": {"phase": "Running", "qosClass": "Burstable", "containerStatuses": statuses,
                       "initContainerStatuses": [{"name": "warmup", "containerID": f"containerd://{INIT_CID}"}]}}


def write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_pod_list_maps_uid_to_names(tmp_path):
    waiting = {"name": "sidecar", "state": {"waiting": {"reason": "ContainerCreating"}}}  # no id yet
    doc = pod_list(pod(statuses=[{"name": "server", "containerID": f"containerd://{CID}"}, waiting]),
                   {"metadata": {"name": "pending", "namespace": "llm", "uid": "0125ec2f-b64a-4868-8f5b-94b56cbab864"}})
    pods = load_pods_mapping(write_json(tmp_path / "pods.json", doc))
    assert pods == {
        UID: PodInfo("rag-api-7d9f", "llm", "burstable", {CID: "server", INIT_CID: "warmup"}),
        "0125ec2f-b64a-4868-8f5b-94b56cbab864": PodInfo("pending", "llm", None, {}),
    }


@pytest.mark.parametrize(("doc", "problem"), [
    ("{not json", " is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ([1, 2], ": $ should be an object (a PodList), not [1, 2]"),
    ({"kind": "Pod", "metadata": {}}, ": $.items is missing"),
    (pod_list(pod(), "oops"), ": $.items[1] should be an object, not 'oops'"),
    (pod_list(pod(), {"metadata": {"name": "x", "namespace": "y"}}), ": $.items[1].metadata.uid is missing"),
    (pod_list({"metadata": {"name": 7, "namespace": "y", "uid": UID}}),
     ": $.items[0].metadata.name should be a string, not 7"),
    (pod_list(pod(statuses=[{"name": "server", "containerID": CID}])),
     f": $.items[0].status.containerStatuses[0].containerID should look like 'containerd://<id>', not '{CID}'"),
    (pod_list(pod(statuses=[{"containerID": f"containerd://{CID}"}])),
     ": $.items[0].status.containerStatuses[0].name is missing"),
])
def test_a_bad_pod_list_names_file_and_json_path(tmp_path, doc, problem):
    path = tmp_path / "pods.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DataError) as err:
        load_pods_mapping(path)
    assert err.value.message == f"pods file {path}{problem}"
    assert err.value.hint == ("save the kubelet's pod list and pass that file: "
                              "kubectl get --raw /api/v1/nodes/<node>/proxy/pods > pods.json")


def test_a_missing_pod_list_is_a_data_error(tmp_path):
    with pytest.raises(DataError) as err:
        load_pods_mapping(tmp_path / "pods.json")
    assert err.value.message == f"cannot read pods file {tmp_path / 'pods.json'}: No such file or directory"


# --- the resolver over a fake cgroup tree --------------------------------------------

BESTEFFORT_UID = "91a8fc3a-0ecf-48b4-81bf-78a7275d348c"
BESTEFFORT_CID = "f75aff467357c5d0ddd47cb7ad87ed38746e018992586ff66198a5c11218f634"
PAUSE_CID = "66be9b2efdf4d85288c319b8c1a2f50d2439b5617e36f45d9d0d0be1381113be"
POD_DIR = f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tree(tmp_path) -> Path:
    """A cgroup tree named like a node's: one systemd-driver pod, one cgroupfs pod, host services."""
    root = tmp_path / "cgroup"
    for rel in [f"{POD_DIR}/cri-containerd-{CID}.scope",
                f"{POD_DIR}/cri-containerd-{PAUSE_CID}.scope",  # the sandbox: not in the pod list
                f"kubepods/besteffort/pod{BESTEFFORT_UID}/{BESTEFFORT_CID}",
                "system.slice/ssh.service",
                "user.slice/user-1000.slice/session-2.scope"]:
        (root / rel).mkdir(parents=True)
    return root


def ino(path: Path) -> int:
    return os.stat(path).st_ino


def test_resolver_names_pods_from_the_pod_list(tree, tmp_path):
    pods = write_json(tmp_path / "pods.json", pod_list(pod()))
    resolver = PodResolver(cgroup_root=tree, pods_file=pods, node="node-a")
    assert resolver.resolve(ino(tree / POD_DIR / f"cri-containerd-{CID}.scope")) == Identity(
        pod="rag-api-7d9f", namespace="llm", container="server", pod_uid=UID, container_id=CID,
        qos_class="burstable", node="node-a")
    sandbox = resolver.resolve(ino(tree / POD_DIR / f"cri-containerd-{PAUSE_CID}.scope"))
    assert (sandbox.pod, sandbox.container, sandbox.container_id) == ("rag-api-7d9f", PAUSE_CID[:12], PAUSE_CID)
    pod_level = resolver.resolve(ino(tree / POD_DIR))
    assert (pod_level.pod, pod_level.container, pod_level.container_id) == ("rag-api-7d9f", None, None)
    # a pod the list does not know keeps its UID and short container id
    assert resolver.resolve(ino(tree / f"kubepods/besteffort/pod{BESTEFFORT_UID}/{BESTEFFORT_CID}")) == Identity(
        pod=BESTEFFORT_UID, namespace=None, container=BESTEFFORT_CID[:12], pod_uid=BESTEFFORT_UID,
        container_id=BESTEFFORT_CID, qos_class="besteffort", node="node-a")
    assert resolver.walks == 1


def test_resolver_without_pod_list_and_with_host_cgroups(tree):
    resolver = PodResolver(cgroup_root=tree, node="node-a")
    assert resolver.resolve(ino(tree / POD_DIR / f"cri-containerd-{CID}.scope")).pod == UID
    assert resolver.resolve(ino(tree / POD_DIR / f"cri-containerd-{CID}.scope")).container == CID[:12]
    assert resolver.resolve(ino(tree / "system.slice/ssh.service")) is None
    assert resolver.resolve(ino(tree)) is None


def test_node_defaults_to_the_host_name(tree):
    assert PodResolver(cgroup_root=tree).node == socket.gethostname()


def test_a_new_cgroup_is_found_by_a_walk_at_most_once_a_second(tree):
    clock = Clock()
    resolver = PodResolver(cgroup_root=tree, node="n", clock=clock)
    assert resolver.resolve(ino(tree / POD_DIR)) is not None
    new_cid = "ab" * 32
    new = tree / POD_DIR / f"cri-containerd-{new_cid}.scope"
    new.mkdir()
    clock.now += 0.5
    assert resolver.resolve(ino(new)) is None  # too soon after the last walk
    assert resolver.walks == 1
    clock.now += 0.5
    assert resolver.resolve(ino(new)).container_id == new_cid
    assert resolver.walks == 2


def test_a_miss_after_a_walk_is_final(tree):
    clock = Clock()
    resolver = PodResolver(cgroup_root=tree, node="n", clock=clock)
    ssh = ino(tree / "system.slice/ssh.service")
    assert resolver.resolve(ssh) is None
    assert resolver.walks == 1
    clock.now += 10
    assert resolver.resolve(ssh) is None
    assert resolver.walks == 1  # cached: a host cgroup never becomes a pod


def test_a_miss_during_the_quiet_second_is_settled_by_the_next_walk(tree):
    clock = Clock()
    resolver = PodResolver(cgroup_root=tree, node="n", clock=clock)
    resolver.resolve(ino(tree / POD_DIR))
    ssh = ino(tree / "system.slice/ssh.service")
    assert resolver.resolve(ssh) is None  # not cached: could be a cgroup younger than the walk
    clock.now += 1
    resolver.resolve(123456789)  # an unknown id triggers the walk, which settles ssh too
    assert resolver.walks == 2
    clock.now += 1
    assert resolver.resolve(ssh) is None
    assert resolver.walks == 2


def test_the_cache_is_bounded(tree):
    resolver = PodResolver(cgroup_root=tree, node="n", max_entries=2)
    dirs = [tree / POD_DIR, tree / POD_DIR / f"cri-containerd-{CID}.scope",
            tree / POD_DIR / f"cri-containerd-{PAUSE_CID}.scope"]
    for d in dirs:
        assert resolver.resolve(ino(d)) is not None
    assert len(resolver._cache) == 2
    # the evicted id is answered again from the walk's index, without a new walk
    assert resolver.resolve(ino(dirs[0])).pod_uid == UID
    assert resolver.walks == 1


def test_columns_resolve_a_batch(tree, tmp_path):
    pods = write_json(tmp_path / "pods.json", pod_list(pod()))
    resolver = PodResolver(cgroup_root=tree, pods_file=pods, node="n")
    server = ino(tree / POD_DIR / f"cri-containerd-{CID}.scope")
    other = ino(tree / f"kubepods/besteffort/pod{BESTEFFORT_UID}/{BESTEFFORT_CID}")
    host = ino(tree / "system.slice/ssh.service")
    ids = np.array([server, host, server, other, 1, server], dtype=np.uint64)
    cols = resolver.columns(ids)
    assert cols["pod"].to_pylist() == ["rag-api-7d9f", None, "rag-api-7d9f", BESTEFFORT_UID, None, "rag-api-7d9f"]
    assert cols["namespace"].to_pylist() == ["llm", None, "llm", None, None, "llm"]
    assert cols["container"].to_pylist() == ["server", None, "server", BESTEFFORT_CID[:12], None, "server"]
    table = kernel_events_table({"ts_ns": np.zeros(6, np.int64), "signal": pa.array(["dns"] * 6),
                                 "cgroup_id": ids, **cols}, 6)
    assert table.column("pod").to_pylist()[3] == BESTEFFORT_UID
    assert {name: col.type for name, col in resolver.columns(np.array([], np.uint64)).items()} == {
        "pod": pa.string(), "namespace": pa.string(), "container": pa.string()}


# --- a real cgroup v2 directory, as root ---------------------------------------------

@pytest.mark.kernel
@pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups and moving a process into one needs root")
def test_a_process_in_a_kubelet_named_cgroup_resolves_to_its_pod():
    root = cgroup2_mount()
    if root is None:
        pytest.skip("no cgroup2 mount on this host")
    uid, cid = str(uuid.uuid4()), uuid.uuid4().hex * 2
    leaf = Path("kubepods.slice", "kubepods-burstable.slice", f"kubepods-burstable-pod{uid.replace('-', '_')}.slice",
                f"cri-containerd-{cid}.scope")
    made: list[Path] = []  # only our own directories, to remove leaf first
    child = None
    try:
        for depth in range(1, len(leaf.parts) + 1):
            d = root / Path(*leaf.parts[:depth])
            if not d.exists():
                d.mkdir()
                made.append(d)
        child = subprocess.Popen(["sleep", "30"])
        (root / leaf / "cgroup.procs").write_text(str(child.pid))
        line = next(x for x in Path(f"/proc/{child.pid}/cgroup").read_text().splitlines() if x.startswith("0::"))
        kernel_path = line[3:]
        assert kernel_path == f"/{leaf}", f"the kernel put sleep in {kernel_path}, not /{leaf}"

        identity = PodResolver(node="n").resolve(os.stat(f"{root}{kernel_path}").st_ino)

        assert identity is not None, f"cgroup {kernel_path} under {root} did not resolve to a pod"
        assert (identity.pod_uid, identity.container_id, identity.qos_class) == (uid, cid, "burstable")
    finally:
        if child is not None:
            child.kill()
            child.wait()
        for d in reversed(made):
            _rmdir_cgroup(d)


def _rmdir_cgroup(d: Path) -> None:
    # a killed task can linger in its cgroup a moment after wait(): retry EBUSY briefly
    for _ in range(50):
        try:
            d.rmdir()
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.02)
    d.rmdir()

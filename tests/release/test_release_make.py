"""make release / make verify-release end to end, on the session's release (conftest.py)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from release import provenance, signing
from release.artifacts import (
    KINDS,
    SUMS_NAME,
    dump_json,
    kind_of,
    sha256_file,
    sums_text,
)
from release.benchmarks import _metric
from tests.release.release_helpers import ROOT, errors, make, verify


def _copy(dist: Path, tmp_path: Path) -> Path:
    out = tmp_path / "dist"
    shutil.copytree(dist, out)
    return out


def _file(dist: Path, kind: str) -> Path:
    found = [p for p in dist.iterdir() if kind_of(p.name) == kind]
    assert len(found) == 1, (kind, found)
    return found[0]


def _statement(dist: Path) -> dict:
    envelope = json.loads(_file(dist, "provenance").read_text())
    return json.loads(base64.b64decode(envelope["payload"]))


def test_the_release_verifies(release):
    done = verify(release.dist, key=release.key)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("verify-release: OK: 7 files")
    assert "the SBOM lists the" in done.stdout
    # the public key shipped in DIST is enough for a user who trusts it
    assert verify(release.dist, pub=release.dist / "release-ed25519.pub.pem").returncode == 0


def test_dist_holds_one_file_of_each_kind(release):
    kinds = sorted(kind_of(p.name) or p.name for p in release.dist.iterdir())
    assert kinds == sorted(KINDS)
    plain = release.version.removeprefix("v")
    assert _file(release.dist, "wheel").name == f"llm_slo_ebpf_toolkit-{plain}-py3-none-linux_x86_64.whl"
    assert _file(release.dist, "sdist").name == f"llm_slo_ebpf_toolkit-{plain}.tar.gz"
    assert (release.dist / "release-ed25519.pub.pem").read_bytes() == release.pub.read_bytes()
    check = subprocess.run(["sha256sum", "--check", "--strict", SUMS_NAME], cwd=release.dist, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_provenance_names_every_artifact_the_commit_and_the_build(release):
    doc = _statement(release.dist)
    provenance.validate(doc)
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    assert {s["name"]: s["digest"]["sha256"] for s in doc["subject"]} == {
        p.name: sha256_file(p) for p in release.dist.iterdir() if kind_of(p.name) != "provenance"}
    build = doc["predicate"]["buildDefinition"]
    source = build["externalParameters"]["source"]
    head = source["commit"]
    assert head in release.commits and isinstance(source["dirty"], bool)
    assert build["externalParameters"]["version"] == release.version
    assert build["externalParameters"]["command"].startswith(f"make release VERSION={release.version} ")
    assert build["resolvedDependencies"][0]["digest"] == {"gitCommit": head}
    meta = doc["predicate"]["runDetails"]["metadata"]
    assert meta["startedOn"] <= meta["finishedOn"]
    assert doc["predicate"]["runDetails"]["builder"]["id"]


def test_the_sbom_describes_the_wheel_and_the_debian_packages(release):
    sbom = json.loads(_file(release.dist, "sbom").read_text())
    wheel = _file(release.dist, "wheel")
    root = sbom["metadata"]["component"]
    assert root["name"] == "llm-slo-ebpf-toolkit" and root["version"] == release.version.removeprefix("v")
    assert root["hashes"] == [{"alg": "SHA-256", "content": sha256_file(wheel)}]
    names = {c["name"] for c in sbom["components"]}
    assert {"duckdb", "pyarrow", "numpy", "protobuf"} <= names and "llm-slo-ebpf-toolkit" not in names
    debs = {c["name"]: c for c in sbom["components"] if c.get("isExternal")}
    makefile = (ROOT / "Makefile").read_text()
    wanted = set(re.search(r"^DEB_PACKAGES := (.*)$", makefile, re.MULTILINE)[1].split()) | {"python3-bpfcc"}
    assert set(debs) == wanted
    for name, c in debs.items():
        version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True,
                                 text=True).stdout
        assert c["version"] == version and c["purl"].startswith(f"pkg:deb/debian/{name}@") and "arch=" in c["purl"]


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_flipped_byte_in_any_artifact_fails(release, tmp_path, kind, where):
    dist = _copy(release.dist, tmp_path)
    target = _file(dist, kind)
    data = bytearray(target.read_bytes())
    at = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[at] ^= 0x01
    target.write_bytes(bytes(data))
    done = verify(dist, key=release.key)
    assert done.returncode != 0
    lines = errors(done)
    assert lines and any(ln.startswith(f"verify-release: {target.name}: ") for ln in lines), done.stderr


def test_another_key_fails(release, tmp_path):
    _, other = signing.generate(tmp_path / "other.pem")
    done = verify(release.dist, pub=other)
    assert done.returncode != 0
    envelope = _file(release.dist, "provenance").name
    other_id = signing.sslib_key(signing.load_public(other)).keyid[:16]
    release_id = signing.sslib_key(signing.load_public(release.pub)).keyid[:16]
    expected = (f"verify-release: {envelope}: DSSE signature does not verify with other.pub.pem "
                f"(key id {other_id}): signed by another key (key id {release_id})")
    assert errors(done) == [expected]


@pytest.mark.parametrize("change", ["extra file", "missing file"])
def test_the_subject_must_name_exactly_the_files_present(release, tmp_path, change):
    dist = _copy(release.dist, tmp_path)
    if change == "extra file":
        (dist / "NOTES.txt").write_text("not part of the release\n")
        expected = "verify-release: NOTES.txt: in DIST but not named by the signed provenance subject"
    else:
        _file(dist, "benchmarks").unlink()
        expected = "verify-release: BENCHMARKS.md: named by the signed provenance subject but missing from DIST"
    done = verify(dist, key=release.key)
    assert done.returncode != 0 and expected in errors(done)


def _resign(dist: Path, key: Path, edit_sbom) -> None:
    """What a faulty release would sign: the SBOM edited, the sums and the provenance
    made again over it and signed with the release key."""
    envelope = _file(dist, "provenance")
    doc = _statement(dist)
    sbom = _file(dist, "sbom")
    bom = json.loads(sbom.read_text())
    edit_sbom(bom)
    sbom.write_text(dump_json(bom))
    digests = {p.name: sha256_file(p) for p in dist.iterdir() if p not in (envelope, dist / SUMS_NAME)}
    (dist / SUMS_NAME).write_text(sums_text(digests))
    digests[SUMS_NAME] = sha256_file(dist / SUMS_NAME)
    doc["subject"] = [{"name": n, "digest": {"sha256": d}} for n, d in sorted(digests.items())]
    envelope.write_bytes(signing.sign(provenance.payload(doc), signing.load_private(key)))


def test_an_sbom_missing_a_component_fails(release, tmp_path):
    dist = _copy(release.dist, tmp_path)

    def drop_urllib3(bom: dict) -> None:
        before = len(bom["components"])
        bom["components"] = [c for c in bom["components"] if c["name"] != "urllib3"]
        assert len(bom["components"]) == before - 1

    _resign(dist, release.key, drop_urllib3)
    done = verify(dist, key=release.key)
    assert done.returncode != 0
    sbom = _file(dist, "sbom").name
    lines = errors(done)
    assert len(lines) == 1 and lines[0].startswith(f"verify-release: {sbom}: lacks 1 distribution(s) the wheel "
                                                   "pulls in: urllib3 "), done.stderr


def test_a_version_other_than_the_projects_stops_the_release(tmp_path):
    made, _ = signing.generate(tmp_path / "k.pem")
    assert made
    done = make("release", "VERSION=v9.9.9", f"DIST={tmp_path / 'dist'}", f"RELEASE_KEY={tmp_path / 'k.pem'}",
                check=False)
    assert done.returncode != 0
    assert re.search(r"^release: VERSION: v9\.9\.9 names version 9\.9\.9, but pyproject\.toml's project version "
                     r"is \S+: ", done.stderr, re.MULTILINE), done.stderr
    assert not list((tmp_path / "dist").glob("*.whl"))  # stopped before the build


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    out, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("| "):
                    break
                rows.append([c.strip() for c in row.strip("|").split(" | ")])
            out.append(([c.strip() for c in line.strip("|").split(" | ")], rows))
    return out


def test_benchmarks_md_is_generated_from_the_inputs(release):
    text = _file(release.dist, "benchmarks").read_text()
    sections = {s.split("\n", 1)[0]: s for s in text.split("\n## ")[1:]}
    assert set(sections) == {"Recorder overhead", "Correlation throughput (GENERATED data)", "Attribution accuracy",
                             "Incident reproducibility", "Release comparison"}
    overhead = sections["Recorder overhead"]
    assert "**Not measured for this release.** `make release-bench-overhead " in overhead
    assert "bench/overhead.py --workload lab --pairs 20" in overhead and "|" not in overhead
    inputs = {"Correlation throughput (GENERATED data)": "correlate_throughput", "Attribution accuracy": "score",
              "Incident reproducibility": "repro", "Release comparison": "compare"}
    for title, name in inputs.items():
        section = sections[title]
        meta = json.loads((release.bench_dir / f"{name}.meta.json").read_text())
        assert f"\n- Command: `{meta['command']}`" in section, title
        assert f"\n- Git commit: `{meta['git']['commit']}`" in section, title
        assert "\n- Machine" in section, title
        for header, rows in _tables(section):
            assert "CI95" in " ".join(header) and "exploratory" in header and rows, title
            assert any(h.startswith("run count") for h in header), title
    # figures are the JSON's, as printed: the macro scores of sloan score
    score = json.loads((release.bench_dir / "score.json").read_text())
    header, rows = _tables(sections["Attribution accuracy"])[0]
    by_figure = {r[0]: r for r in rows}
    for key, label in (("precision", "macro precision"), ("recall", "macro recall"), ("f1", "macro F1")):
        value, interval = _metric(score[key])
        assert by_figure[label][1:3] == [value, interval]
        assert by_figure[label][4] == ("yes" if score["exploratory"] else "no")
    compare = json.loads((release.bench_dir / "compare.json").read_text())
    header, rows = _tables(sections["Release comparison"])[0]
    assert len(rows) == len(compare["metrics"])
    status = _tables(text)[0][1]
    assert ["Recorder overhead", "`overhead.json`", "not measured for this release"] in status

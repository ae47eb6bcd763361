"""The parts of the release tooling, without building a release: keys and DSSE, the
provenance's checks, BENCHMARKS.md from JSON, DIST hygiene."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from release import benchmarks, build, provenance, signing
from release.artifacts import ReleaseError, parse_sums, sums_text
from release.benchrun import meta_path

DATA = Path(__file__).parent / "data"
GIT = {"repository": "git+file:///src", "commit": "a" * 40, "dirty": False, "changed_paths": 0}
COMMANDS = {b.name: f"make-it-{b.name}" for b in benchmarks.BENCHES}


def _statement(**over) -> dict:
    kw = {"git": GIT, "version": "v1.2.3", "command": "make release VERSION=v1.2.3",
          "builder_id": "urn:test:builder", "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:01:00Z",
          "invocation_id": "x", "internal": {}}
    kw.update(over)
    return provenance.statement({"a.whl": "0" * 64, "SHA256SUMS": "1" * 64}, **kw)


# -- keys and the DSSE envelope ---------------------------------------------------------

def test_release_key_is_private_and_never_replaced(tmp_path):
    key = tmp_path / "cfg" / "release-ed25519.pem"
    made, pub = signing.generate(key)
    assert made and pub == tmp_path / "cfg" / "release-ed25519.pub.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    pub.unlink()
    made, again = signing.generate(key)
    assert not made and key.read_bytes() == before and again.is_file()  # only the public half rewritten
    assert signing.public_key_path(tmp_path / "k") == tmp_path / "k.pub.pem"


def test_envelope_verifies_with_its_key_only(tmp_path):
    signing.generate(tmp_path / "a.pem")
    signing.generate(tmp_path / "b.pem")
    private = signing.load_private(tmp_path / "a.pem")
    data = signing.sign(b'{"hello": 1}', private)
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    doc = json.loads(data)
    assert doc["payloadType"] == "application/vnd.in-toto+json" and len(doc["signatures"]) == 1
    pub_a = signing.load_public(tmp_path / "a.pub.pem")
    assert signing.verify(data, pub_a, name="e", key_name="a") == b'{"hello": 1}'
    with pytest.raises(ReleaseError, match="DSSE signature does not verify with b"):
        signing.verify(data, signing.load_public(tmp_path / "b.pub.pem"), name="e", key_name="b")
    # the same envelope written another way is refused: only the signed bytes pass
    with pytest.raises(ReleaseError, match="not byte-for-byte as signed"):
        signing.verify(json.dumps(doc, indent=1).encode(), pub_a, name="e", key_name="a")


def test_a_non_ed25519_key_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "ec.pem").write_bytes(pem)
    (tmp_path / "ec.pem").chmod(0o600)
    with pytest.raises(ReleaseError, match="not an Ed25519 key"):
        signing.load_private(tmp_path / "ec.pem")
    with pytest.raises(ReleaseError, match="release key not found: `make release-key`"):
        signing.load_private(tmp_path / "absent.pem")


# -- provenance ------------------------------------------------------------------------

def test_provenance_is_an_in_toto_slsa_statement():
    doc = _statement()
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert [s["name"] for s in doc["subject"]] == ["SHA256SUMS", "a.whl"]
    assert doc["predicate"]["buildDefinition"]["externalParameters"]["source"]["commit"] == "a" * 40
    assert json.loads(provenance.payload(doc)) == doc


@pytest.mark.parametrize("spoil, message", [
    (lambda d: d["predicate"].update(extra=1), "no field named \"extra\""),
    (lambda d: d["predicate"]["runDetails"]["metadata"].update(finishedOn="yesterday"), "timestamp"),
    (lambda d: d["predicate"]["runDetails"]["builder"].update(id=""), "runDetails.builder.id"),
    (lambda d: d.update(subject=[]), "subject"),
    (lambda d: d["subject"][0]["digest"].update(sha256="ab"), "sha256"),
    (lambda d: d.update(predicateType="https://slsa.dev/provenance/v0.2"), "predicateType"),
])
def test_provenance_checks_refuse_a_spoiled_statement(spoil, message):
    doc = _statement()
    spoil(doc)
    with pytest.raises(ValueError, match=message):
        provenance.validate(doc)


# -- BENCHMARKS.md ----------------------------------------------------------------------

def _render(bench_dir: Path) -> str:
    return benchmarks.render(bench_dir, version="1.2.3", git=GIT, commands=COMMANDS, label="BENCH")


def test_nothing_measured_lists_every_benchmark_with_its_command(tmp_path):
    text = _render(tmp_path)
    for b in benchmarks.BENCHES:
        assert (f"**Not measured for this release.** `make release-bench-{b.name} BENCH_DIR=BENCH` produces it: "
                f"`make-it-{b.name}`.") in text
    assert "%" not in text.split("## ", 1)[1]  # not one figure


def test_overhead_from_a_real_smoke_run(tmp_path):
    """tests/release/data/overhead-smoke.json: bench/overhead.py --workload synthetic --pairs 2
    --aa-pairs 2 --ops 400 --no-peer --resamples 1000, as written on the dev VM, no meta."""
    shutil.copy(DATA / "overhead-smoke.json", tmp_path / "overhead.json")
    doc = json.loads((DATA / "overhead-smoke.json").read_text())
    text = _render(tmp_path)
    section = text.split("## Recorder overhead", 1)[1].split("\n## ", 1)[0]
    assert "- Command: not recorded (BENCH/overhead.json has no overhead.meta.json" in section
    assert f"- Machine: {doc['host']['node']}, kernel {doc['host']['kernel']}, {doc['host']['cpus']} CPUs" in section
    assert "- Git commit: not recorded" in section
    s = doc["summaries_pct"]["slocap"]["machine_cpu_s"]
    row = (f"| slocap | machine CPU | {benchmarks.num(s['median_pct'])} % | "
           f"{benchmarks.ci(s['low_pct'], s['high_pct'])} % | {s['n']} pairs ({2 * s['n']} runs) | yes (< 10 pairs) |")
    assert row in section
    assert section.count("\n| ") == 1 + 2 * 3  # header, 2 experiments x 3 metrics


def test_meta_from_another_commit_is_said(tmp_path):
    shutil.copy(DATA / "overhead-smoke.json", tmp_path / "overhead.json")
    meta = {"command": ".venv/bin/python bench/overhead.py --json x", "git": {"commit": "b" * 40, "dirty": True},
            "host": {"node": "box", "kernel": "6.1", "cpus": 8}, "started": "s", "finished": "f"}
    meta_path(tmp_path / "overhead.json").write_text(json.dumps(meta))
    text = _render(tmp_path)
    assert "- Command: `.venv/bin/python bench/overhead.py --json x`" in text
    assert f"- Git commit: `{'b' * 40}` with uncommitted changes (not this release's commit `aaaaaaaaaaaa`)" in text
    assert "- Machine that ran it: box, kernel 6.1, 8 CPUs" in text


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"results": []}', "not the JSON its command writes"),
])
def test_a_bad_input_stops_the_release(tmp_path, content, message):
    (tmp_path / "score.json").write_text(content)
    with pytest.raises(ReleaseError, match=message) as err:
        _render(tmp_path)
    assert err.value.artifact == "BENCH/score.json"


# -- DIST, versions, sums -----------------------------------------------------------------

def test_preflight_refuses_files_no_release_makes(tmp_path):
    signing.generate(tmp_path / "k.pem")
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "BENCHMARKS.md").write_text("old")
    (dist / "notes.txt").write_text("mine")
    tag = f"v{build.project_version()}"
    with pytest.raises(ReleaseError, match="holds notes.txt, which no release makes"):
        build.preflight(tag, tmp_path / "k.pem", dist)
    (dist / "notes.txt").unlink()
    build.preflight(tag, tmp_path / "k.pem", dist)
    assert not list(dist.iterdir())  # an earlier release's files are cleared


def test_version_check():
    build.check_version("v1.2.3", "1.2.3", "x")
    build.check_version("1.2.3", "1.2.3", "x")
    with pytest.raises(ReleaseError, match="not set"):
        build.check_version("", "1.2.3", "x")
    with pytest.raises(ReleaseError, match="v1.2 names version 1.2, but x is 1.2.3"):
        build.check_version("v1.2", "1.2.3", "x")


def test_sums_round_trip():
    digests = {"b.txt": "1" * 64, "a.whl": "f" * 64}
    text = sums_text(digests)
    assert text.splitlines()[0] == f"{'f' * 64}  a.whl"
    assert parse_sums(text) == digests
    with pytest.raises(ValueError):
        parse_sums("nonsense\n")

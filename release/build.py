"""`make release`: the steps around `make wheel`.

preflight (before the wheel is built): VERSION against pyproject.toml, the key pair,
and a DIST that holds nothing but an earlier release's files (which it removes).

assemble (after): the SBOM, BENCHMARKS.md, the public key, SHA256SUMS, the SLSA
provenance naming every one of them with its sha256, and the DSSE envelope that signs
it. Then the signed parts are verified once, as `make verify-release` would.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import platform
import shutil
import sys
import tempfile
import tomllib
import uuid
from pathlib import Path

from release import benchmarks, provenance, sbom, signing
from release.artifacts import (
    BENCHMARKS_NAME, FILE_PREFIX, PUBKEY_NAME, SUMS_NAME, ReleaseError, dump_json, envelope_name, git_facts,
    kind_of, sbom_name, sha256_file, sums_text, utc_now, wheel_version,
)

ROOT = Path(__file__).resolve().parents[1]


def plain_version(tag: str) -> str:
    return tag[1:] if tag[:1] in ("v", "V") else tag


def project_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    with open(pyproject, "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def check_version(tag: str, found: str, where: str) -> None:
    if not tag:
        raise ReleaseError("VERSION", "not set: make release VERSION=vX.Y.Z")
    if plain_version(tag) != found:
        raise ReleaseError("VERSION", f"{tag} names version {plain_version(tag)}, but {where} is {found}: "
                                      "release the project's version, or change the version in pyproject.toml")


def key_pair(key: Path):
    """The private key and the public key beside it, which must be its own."""
    private = signing.load_private(key)
    pub = signing.public_key_path(key)
    if not pub.is_file():
        raise ReleaseError(str(pub), "public key missing beside the release key: `make release-key` writes it")
    if signing.public_pem(signing.load_public(pub)) != signing.public_pem(private.public_key()):
        raise ReleaseError(str(pub), f"is not the public key of {key}")
    return private, pub


def _dist_files(dist: Path) -> list[Path]:
    files = sorted(dist.iterdir()) if dist.is_dir() else []
    strange = [p.name for p in files if not p.is_file() or kind_of(p.name) is None]
    if strange:
        raise ReleaseError(str(dist), f"holds {', '.join(strange)}, which no release makes: remove them or "
                                      "use another DIST")
    return files


def preflight(tag: str, key: Path, dist: Path) -> None:
    check_version(tag, project_version(), "pyproject.toml's project version")
    key_pair(key)
    dist.mkdir(parents=True, exist_ok=True)
    for p in _dist_files(dist):
        p.unlink()  # an earlier release's files: this one writes them all again


def _versions(*names: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def assemble(tag: str, *, key: Path, dist: Path, bench_dir: Path, debs: dict[str, str], started: str,
             command: str, commands: dict[str, str], builder_id: str | None = None) -> list[Path]:
    version = plain_version(tag)
    private, pub = key_pair(key)
    files = _dist_files(dist)
    wheels = [p for p in files if kind_of(p.name) == "wheel"]
    sdists = [p for p in files if kind_of(p.name) == "sdist"]
    if len(wheels) != 1 or len(sdists) != 1:
        raise ReleaseError(str(dist), f"holds {len(wheels)} wheel(s) and {len(sdists)} sdist(s), not one each "
                                      "(`make wheel` makes them)")
    wheel, sdist = wheels[0], sdists[0]
    check_version(tag, wheel_version(wheel), f"the version of {wheel.name}")
    if sdist.name != f"{FILE_PREFIX}-{version}.tar.gz":
        raise ReleaseError(sdist.name, f"is not the sdist of version {version}")
    extra = [p.name for p in files if p not in (wheel, sdist)]
    if extra:
        raise ReleaseError(str(dist), f"already holds {', '.join(extra)}: run `make release`, which clears it")

    git = git_facts(ROOT, exclude=(dist, bench_dir))
    if git["dirty"]:
        print(f"release: warning: the checkout has {git['changed_paths']} uncommitted change(s); the provenance "
              "records it as dirty", file=sys.stderr)

    print("release: SBOM (the wheel installed into a fresh venv, cyclonedx-py environment)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="release-sbom-") as tmp:
        doc = sbom.build(wheel, debs, Path(tmp))
    sbom_path = dist / sbom_name(version)
    sbom_path.write_text(dump_json(doc))

    print("release: BENCHMARKS.md", file=sys.stderr)
    bench_text = benchmarks.render(bench_dir, version=version, git=git, commands=commands)
    (dist / BENCHMARKS_NAME).write_text(bench_text)
    shutil.copyfile(pub, dist / PUBKEY_NAME)

    artifacts = [wheel, sdist, sbom_path, dist / BENCHMARKS_NAME, dist / PUBKEY_NAME]
    digests = {p.name: sha256_file(p) for p in artifacts}
    sums = dist / SUMS_NAME
    sums.write_text(sums_text(digests))
    digests[SUMS_NAME] = sha256_file(sums)

    print("release: provenance and signature", file=sys.stderr)
    statement = provenance.statement(
        digests, git=git, version=tag, command=command,
        builder_id=builder_id or f"urn:llm-slo-ebpf-toolkit:builder:make-release:{getpass.getuser()}@"
                                 f"{platform.node()}",
        started=started, finished=utc_now(), invocation_id=str(uuid.uuid4()),
        internal={"tools": _versions("pip", "build", "cyclonedx-bom", "securesystemslib",
                                     "in-toto-attestation", "cryptography"),
                  "os": sbom.os_release().get("PRETTY_NAME", platform.platform()),
                  "sbom": "pip install of the wheel into a fresh venv; cyclonedx-py environment",
                  "debianPackages": sorted(debs)})
    envelope = dist / envelope_name(version)
    envelope.write_bytes(signing.sign(provenance.payload(statement), private))

    from release.verify import verify

    problems, _ = verify(dist, pub, check_closure=False)
    if problems:
        raise ReleaseError(problems[0][0], f"the release just made does not verify: {problems[0][1]}")
    return sorted(dist.iterdir())

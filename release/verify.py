"""`make verify-release`: is DIST the release its signature says it is?

1. The provenance envelope (*.intoto.jsonl) is byte-for-byte as signed, and its DSSE
   signature verifies with the trusted public key (RELEASE_PUB; by default the one
   beside RELEASE_KEY). Nothing else is trusted before this holds.
2. The provenance subject names exactly the files in DIST (the envelope aside), and
   every file's sha256 is the subject's; SHA256SUMS agrees; the public key in DIST is
   the trusted key; the wheel and sdist are of the signed version.
3. Only then (a wheel whose hash does not verify is not handed to pip): the SBOM
   lists every distribution the wheel pulls in, with its version, and no other. The
   closure is resolved again by pip (dry run), as PyPI stood at the provenance's
   finishedOn.

Each failure is one line: the artifact, then what failed.
"""

from __future__ import annotations

import json
from pathlib import Path

from release import provenance, sbom, signing
from release.artifacts import (
    FILE_PREFIX,
    PUBKEY_NAME,
    SUMS_NAME,
    ReleaseError,
    kind_of,
    parse_sums,
    sha256_file,
    wheel_version,
)

Problem = tuple[str, str]  # (artifact, what failed)


def _signed_statement(dist: Path, public, pub_name: str) -> tuple[Path, dict]:
    envelopes = sorted(dist.glob(f"{FILE_PREFIX}-*.intoto.jsonl"))
    if len(envelopes) != 1:
        raise ReleaseError(str(dist), f"holds {len(envelopes)} provenance envelopes (*.intoto.jsonl), not 1")
    env = envelopes[0]
    payload = signing.verify(env.read_bytes(), public, name=env.name, key_name=pub_name)
    try:
        doc = json.loads(payload)
        provenance.validate(doc)
    except ValueError as exc:
        raise ReleaseError(env.name, f"the signed payload is not the release's provenance: {exc}") from None
    return env, doc


def verify(dist: Path, pub: Path, *, check_closure: bool = True) -> tuple[list[Problem], str]:
    """(problems, summary of what was checked); no problems: DIST verifies."""
    if not dist.is_dir():
        return [(str(dist), "no such directory")], ""
    try:
        public = signing.load_public(pub)
        envelope, doc = _signed_statement(dist, public, pub.name)
    except ReleaseError as exc:
        return [(exc.artifact, exc.what)], ""

    problems: list[Problem] = []
    subject = {s["name"]: s["digest"]["sha256"] for s in doc["subject"]}
    present = {p.name: p for p in sorted(dist.iterdir()) if p != envelope}
    for name in sorted(present.keys() - subject.keys()):
        problems.append((name, "in DIST but not named by the signed provenance subject"))
    for name in sorted(subject.keys() - present.keys()):
        problems.append((name, "named by the signed provenance subject but missing from DIST"))
    actual = {}
    for name in sorted(subject.keys() & present.keys()):
        path = present[name]
        if not path.is_file():
            problems.append((name, "not a regular file"))
            continue
        actual[name] = sha256_file(path)
        if actual[name] != subject[name]:
            problems.append((name, f"sha256 {actual[name]} differs from the signed provenance's {subject[name]}"))

    if SUMS_NAME in actual and actual[SUMS_NAME] == subject[SUMS_NAME]:
        try:
            sums = parse_sums(present[SUMS_NAME].read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append((SUMS_NAME, f"unreadable: {exc}"))
        else:
            expected = {n: d for n, d in subject.items() if n != SUMS_NAME}
            if sums != expected:
                problems.append((SUMS_NAME, "does not list the subject's files and digests"))

    if PUBKEY_NAME in present and actual.get(PUBKEY_NAME) == subject.get(PUBKEY_NAME):
        try:
            shipped = signing.public_pem(signing.load_public(present[PUBKEY_NAME]))
        except ReleaseError as exc:
            problems.append((PUBKEY_NAME, exc.what))
        else:
            if shipped != signing.public_pem(public):
                problems.append((PUBKEY_NAME, f"is not the key the release is signed with ({pub})"))

    version = doc["predicate"]["buildDefinition"]["externalParameters"]["version"]
    plain = version[1:] if version[:1] in ("v", "V") else version
    wheels = [n for n in subject if kind_of(n) == "wheel"]
    sboms = [n for n in subject if kind_of(n) == "sbom"]
    for kind in ("wheel", "sdist", "sbom", "benchmarks", "public key", "checksums"):
        if not any(kind_of(n) == kind for n in subject):
            problems.append((str(dist), f"the signed provenance names no {kind}"))
    for n in wheels:
        if wheel_version(Path(n)) != plain:
            problems.append((n, f"is not of the signed version {version}"))
    for n in (n for n in subject if kind_of(n) == "sdist"):
        if n != f"{FILE_PREFIX}-{plain}.tar.gz":
            problems.append((n, f"is not of the signed version {version}"))

    summary = (f"{len(present) + 1} files in {dist} match the provenance signed with {pub.name} "
               f"(key id {signing.sslib_key(public).keyid[:16]}), version {version}")
    if problems or not check_closure:
        return problems, summary

    wheel, sbom_file = present[wheels[0]], present[sboms[0]]
    finished = doc["predicate"]["runDetails"]["metadata"]["finishedOn"]
    try:
        closure = sbom.resolve_closure(wheel, finished)
    except ReleaseError as exc:
        return [(exc.artifact, exc.what)], summary
    try:
        sbom_doc = json.loads(sbom_file.read_text())
    except ValueError as exc:
        return [(sbom_file.name, f"not JSON: {exc}")], summary
    problems += [(sbom_file.name, p) for p in sbom.check(sbom_doc, wheel, closure)]
    summary += f"; the SBOM lists the {len(closure)} distributions {wheel.name} pulls in (PyPI as of {finished})"
    return problems, summary

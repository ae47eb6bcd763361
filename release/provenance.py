"""The SLSA v1 provenance of a release, as an in-toto v1 Statement.

The statement is built as plain JSON and checked against the in-toto attestation
framework's own protobuf definitions (in-toto-attestation: Statement and the SLSA
Provenance predicate): json_format.ParseDict refuses unknown fields and malformed
timestamps, Statement.validate() a statement without subjects or digests.
"""

from __future__ import annotations

import json

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import STATEMENT_TYPE_URI, Statement

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# what buildDefinition means: `make release` of this repository (docs/release.md)
BUILD_TYPE = "urn:llm-slo-ebpf-toolkit:build-type:make-release:v1"


def statement(subjects: dict[str, str], *, git: dict, version: str, command: str, builder_id: str,
              started: str, finished: str, invocation_id: str, internal: dict) -> dict:
    """subjects: file name -> sha256 hex; git: artifacts.git_facts()."""
    source = {"uri": git["repository"], "digest": {"gitCommit": git["commit"]},
              "annotations": {"dirty": git["dirty"]}}
    doc = {
        "_type": STATEMENT_TYPE_URI,
        "subject": [{"name": name, "digest": {"sha256": subjects[name]}} for name in sorted(subjects)],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "source": {"repository": git["repository"], "commit": git["commit"], "dirty": git["dirty"]},
                    "version": version,
                    "command": command,
                },
                "internalParameters": internal,
                "resolvedDependencies": [source],
            },
            "runDetails": {
                "builder": {"id": builder_id},
                "metadata": {"invocationId": invocation_id, "startedOn": started, "finishedOn": finished},
            },
        },
    }
    validate(doc)
    return doc


def payload(doc: dict) -> bytes:
    """The bytes that are signed: compact JSON with sorted keys."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def validate(doc: dict) -> None:
    """ValueError unless `doc` is an in-toto v1 Statement with a SLSA v1 provenance
    predicate holding what `make release` records."""
    try:
        pb = json_format.ParseDict(doc, statement_pb2.Statement())
        Statement.copy_from_pb(pb).validate()
        json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
    except (json_format.ParseError, KeyError, TypeError) as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    if doc["predicateType"] != PREDICATE_TYPE:
        raise ValueError(f"predicateType is {doc['predicateType']!r}, not {PREDICATE_TYPE!r}")
    for sub in doc["subject"]:
        digest = sub.get("digest", {}).get("sha256", "")
        if not sub.get("name") or len(digest) != 64:
            raise ValueError(f"subject {sub.get('name')!r} lacks a name or a sha256 digest")
    names = [s["name"] for s in doc["subject"]]
    if len(set(names)) != len(names):
        raise ValueError("a subject is named twice")
    build = doc["predicate"].get("buildDefinition", {})
    run = doc["predicate"].get("runDetails", {})
    missing = [what for what, value in (
        ("buildDefinition.buildType", build.get("buildType")),
        ("buildDefinition.externalParameters.source.commit",
         build.get("externalParameters", {}).get("source", {}).get("commit")),
        ("buildDefinition.externalParameters.version", build.get("externalParameters", {}).get("version")),
        ("buildDefinition.resolvedDependencies", build.get("resolvedDependencies")),
        ("runDetails.builder.id", run.get("builder", {}).get("id")),
        ("runDetails.metadata.finishedOn", run.get("metadata", {}).get("finishedOn")),
    ) if not value]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")

"""python -m release {preflight,assemble,verify,key,bench-run,benchmarks}: what
mk/release.mk calls. Every failure is one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from release.artifacts import ReleaseError


def _commands(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, cmd = pair.partition("=")
        if not sep:
            raise ReleaseError("--bench-command", f"{pair!r} is not NAME=COMMAND")
        out[name] = " ".join(cmd.split())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m release", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("preflight", help="before `make wheel`: VERSION, key pair, a clean DIST")
    p.add_argument("--version", default="")
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--dist", type=Path, required=True)

    p = sub.add_parser("assemble", help="after `make wheel`: SBOM, BENCHMARKS.md, sums, provenance, signature")
    p.add_argument("--version", default="")
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--dist", type=Path, required=True)
    p.add_argument("--bench-dir", type=Path, required=True)
    p.add_argument("--debs", default="", help="Debian packages make setup installs (DEB_PACKAGES)")
    p.add_argument("--bcc-debs", default="", help="Debian packages capture/bcc_setup.sh installs")
    p.add_argument("--started", required=True, help="when the build started, UTC (RFC 3339)")
    p.add_argument("--command", required=True, help="the build command, for the provenance")
    p.add_argument("--builder-id", default=None)
    p.add_argument("--bench-command", action="append", default=[], metavar="NAME=COMMAND",
                   help="the command that makes BENCH_DIR/NAME.json (said when it is missing)")

    p = sub.add_parser("verify", help="check DIST against its signed provenance and the SBOM")
    p.add_argument("--dist", type=Path, required=True)
    p.add_argument("--pub", type=Path, default=None, help="trusted public key (default: beside --key)")
    p.add_argument("--key", type=Path, default=None)

    p = sub.add_parser("key", help="make an Ed25519 key pair unless the key exists")
    p.add_argument("--key", type=Path, required=True)

    p = sub.add_parser("bench-run", help="run one benchmark command, record NAME.meta.json beside its JSON")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stdout", action="store_true", help="the command prints its JSON: write stdout to --out")
    p.add_argument("--runs", type=Path, action="append", default=[], help="run directories the command reads")
    p.add_argument("command", nargs=argparse.REMAINDER)

    p = sub.add_parser("benchmarks", help="render BENCHMARKS.md from BENCH_DIR (to preview it)")
    p.add_argument("--bench-dir", type=Path, required=True)
    p.add_argument("--version", default="")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--bench-command", action="append", default=[], metavar="NAME=COMMAND")

    a = ap.parse_args(argv)
    prog = "verify-release" if a.cmd == "verify" else "release"
    try:
        return _run(a)
    except ReleaseError as exc:
        print(f"{prog}: {exc.artifact}: {' '.join(exc.what.split())}", file=sys.stderr)
        return 1


def _run(a: argparse.Namespace) -> int:
    from release import build, signing

    if a.cmd == "preflight":
        build.preflight(a.version, a.key, a.dist)
        return 0
    if a.cmd == "assemble":
        from release.sbom import env_debs

        files = build.assemble(a.version, key=a.key, dist=a.dist, bench_dir=a.bench_dir,
                               debs=env_debs(a.debs, a.bcc_debs), started=a.started, command=a.command,
                               commands=_commands(a.bench_command), builder_id=a.builder_id)
        print(f"release {a.version}: {len(files)} files in {a.dist}:")
        for f in files:
            print(f"  {f.name}")
        return 0
    if a.cmd == "verify":
        from release.verify import verify

        if a.pub is None and a.key is None:
            raise ReleaseError("RELEASE_PUB", "give the trusted public key (--pub) or the release key (--key)")
        pub = a.pub or signing.public_key_path(a.key)
        problems, summary = verify(a.dist, pub)
        for artifact, what in problems:
            print(f"verify-release: {artifact}: {' '.join(what.split())}", file=sys.stderr)
        if problems:
            return 1
        print(f"verify-release: OK: {summary}")
        return 0
    if a.cmd == "key":
        made, pub = signing.generate(a.key)
        print(f"release-key: {'made' if made else 'kept the existing'} {a.key}; public key {pub}")
        return 0
    if a.cmd == "bench-run":
        from release.benchrun import run

        cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
        return run(a.out, cmd, stdout=a.stdout, runs=a.runs)
    if a.cmd == "benchmarks":
        from release.artifacts import git_facts
        from release.benchmarks import render

        text = render(a.bench_dir, version=a.version or build.project_version(),
                      git=git_facts(build.ROOT, exclude=(a.bench_dir,)), commands=_commands(a.bench_command))
        if a.out:
            a.out.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    raise AssertionError(a.cmd)


if __name__ == "__main__":
    sys.exit(main())

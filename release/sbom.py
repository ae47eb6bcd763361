"""The CycloneDX SBOM of a release, and the check that it lists the wheel's closure.

Building it: a fresh virtual environment (no pip of its own), the built wheel installed
into it from PyPI, `cyclonedx-py environment` over it. Then the wheel's own component
becomes metadata.component (with the wheel's file name and sha256), and the Debian
packages that `make setup` installs are added as external components (CycloneDX 1.7
isExternal: provided by the machine, not by the wheel) with their dpkg versions.

Checking it (make verify-release): the closure is resolved again, independently, by
`pip install --dry-run --report` of the wheel, with PyPI as it stood when the release
was made (--uploaded-prior-to the provenance's finishedOn); every distribution there
must be in the SBOM with the same version, and the SBOM must list no other.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from packageurl import PackageURL
from packaging.utils import canonicalize_name

from release.artifacts import DIST_NAME, ReleaseError, sha256_file, wheel_version

SPEC_VERSION = "1.7"  # isExternal is new in CycloneDX 1.7
PROP = "llm-slo-ebpf-toolkit"  # namespace of this project's CycloneDX properties


def _run(cmd: list[str], what: str, artifact: str = "SBOM") -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines()
                 if ln.strip() and not ln.startswith("WARNING: Location")]  # pip's notes on find-links
        raise ReleaseError(artifact, f"{what} failed (exit {done.returncode}): {' | '.join(lines[-3:])}")
    return done


def _cyclonedx_py() -> list[str]:
    exe = Path(sys.executable).parent / "cyclonedx-py"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cyclonedx_py"]


def os_release() -> dict[str, str]:
    try:
        return platform.freedesktop_os_release()
    except OSError:
        return {}


def debian_component(name: str, installed_by: str) -> dict:
    done = subprocess.run(["dpkg-query", "-W", "-f", ("${Package}\t${Version}\t${Architecture}\t"
                           "${db:Status-Status}\t${binary:Summary}"), name], capture_output=True, text=True)
    fields = done.stdout.split("\t")
    if done.returncode != 0 or len(fields) < 5 or fields[3] != "installed":
        raise ReleaseError("SBOM", f"Debian package {name} is not installed (dpkg-query): run `make setup` first")
    package, version, arch, _, summary = fields[:5]
    osr = os_release()
    qualifiers = {"arch": arch}
    if osr.get("ID") and osr.get("VERSION_ID"):
        qualifiers["distro"] = f"{osr['ID']}-{osr['VERSION_ID']}"
    return {
        "type": "library" if package.startswith(("lib", "python3-")) else "application",
        "bom-ref": f"deb:{package}@{version}",
        "name": package,
        "version": version,
        "description": summary.strip(),
        "purl": PackageURL(type="deb", namespace=osr.get("ID", "debian"), name=package, version=version,
                           qualifiers=qualifiers).to_string(),
        "isExternal": True,
        "properties": [{"name": f"{PROP}:installed-by", "value": installed_by}],
    }


def _venv_distributions(python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))")
    done = _run([str(python), "-c", code], "listing the temporary venv's distributions")
    return {canonicalize_name(k): v for k, v in json.loads(done.stdout).items()}


def pypi_components(doc: dict) -> dict[str, tuple[str, str]]:
    """canonical name -> (name, version) of every PyPI component (purl pkg:pypi/...)."""
    out: dict[str, tuple[str, str]] = {}
    for c in doc.get("components", []):
        purl = c.get("purl", "")
        if not purl.startswith("pkg:pypi/"):
            continue
        p = PackageURL.from_string(purl)
        out[canonicalize_name(p.name)] = (c.get("name", p.name), str(c.get("version", p.version)))
    return out


def validate(doc: dict) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.from_version(doc.get("specVersion", SPEC_VERSION))) \
        .validate_str(json.dumps(doc))
    if error is not None:
        raise ValueError(f"not valid CycloneDX {doc.get('specVersion')}: {str(error).splitlines()[0]}")


def build(wheel: Path, debs: dict[str, str], workdir: Path) -> dict:
    """The SBOM document. debs: Debian package -> what installs it."""
    venv = workdir / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "python -m venv")
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-input",
          "--disable-pip-version-check", str(wheel)], f"pip install {wheel.name} into a fresh venv")
    raw = workdir / "environment.cdx.json"
    _run([*_cyclonedx_py(), "environment", "--spec-version", SPEC_VERSION, "--mc-type", "application",
          "--output-format", "JSON", "--output-file", str(raw), str(python)], "cyclonedx-py environment")
    doc = json.loads(raw.read_text())

    # the wheel itself: metadata.component, not one of its own components
    ours = canonicalize_name(DIST_NAME)
    mine = [c for c in doc["components"] if canonicalize_name(c.get("name", "")) == ours]
    if len(mine) != 1:
        raise ReleaseError("SBOM", f"cyclonedx-py listed {len(mine)} components named {DIST_NAME}, not 1")
    doc["components"] = [c for c in doc["components"] if c is not mine[0]]
    version = wheel_version(wheel)
    digest = sha256_file(wheel)
    root = {
        "type": "application",
        "bom-ref": mine[0]["bom-ref"],
        "name": DIST_NAME,
        "version": version,
        "description": mine[0].get("description", ""),
        "licenses": mine[0].get("licenses", []),
        "purl": PackageURL(type="pypi", name=DIST_NAME, version=version,
                           qualifiers={"file_name": wheel.name}).to_string(),
        "hashes": [{"alg": "SHA-256", "content": digest}],
        "externalReferences": [{"type": "distribution", "url": wheel.name,
                                "comment": "the wheel of this release, beside this SBOM",
                                "hashes": [{"alg": "SHA-256", "content": digest}]}],
    }
    if mine[0]["version"] != version:
        raise ReleaseError("SBOM", f"the venv holds {DIST_NAME} {mine[0]['version']}, the wheel is {version}")

    # cyclonedx-py's view against the venv's own: both must be the whole closure
    listed = {k: v for k, (_, v) in pypi_components(doc).items()}
    installed = {k: v for k, v in _venv_distributions(python).items() if k != ours}
    if listed != installed:
        diff = sorted(set(listed.items()) ^ set(installed.items()))
        raise ReleaseError("SBOM", f"cyclonedx-py and the venv disagree on {diff[:5]}")

    externals = [debian_component(name, by) for name, by in debs.items()]
    doc["components"].extend(externals)
    for dep in doc.setdefault("dependencies", []):
        if dep.get("ref") == root["bom-ref"]:
            dep["dependsOn"] = sorted(set(dep.get("dependsOn", [])) | {c["bom-ref"] for c in externals})
            break
    else:
        doc["dependencies"].append({"ref": root["bom-ref"], "dependsOn": [c["bom-ref"] for c in externals]})
    doc["dependencies"].extend({"ref": c["bom-ref"]} for c in externals)

    meta = doc.setdefault("metadata", {})
    meta["component"] = root
    meta["properties"] = [p for p in meta.get("properties", []) if p.get("name") != "cdx:reproducible"] + [
        {"name": f"{PROP}:python", "value": platform.python_version()},
        {"name": f"{PROP}:closure", "value": "pip install of the wheel into a fresh venv (python -m venv "
                                             "--without-pip); every distribution installed there"},
    ]
    validate(doc)
    return doc


def resolve_closure(wheel: Path, uploaded_prior_to: str | None) -> dict[str, tuple[str, str]]:
    """canonical name -> (name, version) of what `pip install <wheel>` pulls in, the wheel
    excluded: a dry run into nothing (--ignore-installed), nothing installed."""
    with tempfile.TemporaryDirectory(prefix="verify-release-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--no-input", "--disable-pip-version-check", "--report", str(report), str(wheel)]
        if uploaded_prior_to:
            cmd[4:4] = ["--uploaded-prior-to", uploaded_prior_to]
        _run(cmd, "resolving the wheel's closure (pip install --dry-run --report)", artifact=wheel.name)
        installs = json.loads(report.read_text())["install"]
    ours = canonicalize_name(DIST_NAME)
    out = {}
    for item in installs:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if canonicalize_name(name) != ours:
            out[canonicalize_name(name)] = (name, version)
    return out


def check(doc: dict, wheel: Path, closure: dict[str, tuple[str, str]]) -> list[str]:
    """What is wrong with the SBOM `doc` against the wheel and its resolved closure."""
    problems = []
    try:
        validate(doc)
    except ValueError as exc:
        problems.append(str(exc))
    root = doc.get("metadata", {}).get("component", {})
    digest = sha256_file(wheel)
    if (canonicalize_name(root.get("name", "")) != canonicalize_name(DIST_NAME)
            or root.get("version") != wheel_version(wheel)
            or {"alg": "SHA-256", "content": digest} not in root.get("hashes", [])):
        problems.append(f"metadata.component is not {wheel.name} (name, version, sha256)")
    listed = pypi_components(doc)
    missing = [f"{closure[k][0]} {closure[k][1]}" for k in sorted(closure.keys() - listed.keys())]
    extra = [f"{listed[k][0]} {listed[k][1]}" for k in sorted(listed.keys() - closure.keys())]
    changed = [f"{listed[k][0]} {listed[k][1]} (the wheel pulls in {closure[k][1]})"
               for k in sorted(closure.keys() & listed.keys()) if listed[k][1] != closure[k][1]]
    if missing:
        problems.append(f"lacks {len(missing)} distribution(s) the wheel pulls in: {', '.join(missing)}")
    if extra:
        problems.append(f"lists {len(extra)} distribution(s) the wheel does not pull in: {', '.join(extra)}")
    if changed:
        problems.append(f"lists other versions than the wheel pulls in: {', '.join(changed)}")
    props = {p.get("name"): p.get("value") for p in doc.get("metadata", {}).get("properties", [])}
    made_with = props.get(f"{PROP}:python")
    if (missing or extra or changed) and made_with and made_with.rsplit(".", 1)[0] != \
            platform.python_version().rsplit(".", 1)[0]:
        problems.append(f"(made with Python {made_with}, checked with {platform.python_version()}: "
                        "verify with the release's Python minor version)")
    return problems


def env_debs(make_debs: str, bcc_debs: str) -> dict[str, str]:
    out = {name: "make setup (Makefile DEB_PACKAGES)" for name in make_debs.split()}
    out.update({name: "make setup: capture/bcc_setup.sh (BCC mode)" for name in bcc_debs.split()})
    return out


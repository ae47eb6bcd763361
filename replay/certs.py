"""A self-signed certificate for the lab's TLS backend, made once per directory.

The certificate is its own CA: the gateway trusts it with --backend-ca. Made by
the openssl command line (the `cryptography` package is not a dependency).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

from runfmt.errors import SloError

__all__ = ["make_self_signed"]

SUBJECT_ALT_NAMES = "DNS:backend.lab,DNS:localhost,IP:127.0.0.1"
# openssl makes it valid for 2 days; renew well before a long run could outlive it
MAX_AGE_S = 24 * 3600


def make_self_signed(directory: Path | str) -> tuple[Path, Path]:
    """(cert.pem, key.pem) in `directory`, made if missing or older than a day."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # two services starting together must not pair one's key with the other's cert
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _make_locked(directory)


def _make_locked(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists() and time.time() - cert.stat().st_mtime < MAX_AGE_S:
        return cert, key
    # temporary names, then rename: a reader without the lock never sees half a file
    tmp_cert = directory / f".cert.{os.getpid()}.pem"
    tmp_key = directory / f".key.{os.getpid()}.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=backend.lab", "-addext", f"subjectAltName={SUBJECT_ALT_NAMES}",
            "-keyout", str(tmp_key), "-out", str(tmp_cert)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise SloError("cannot make the lab's TLS certificate: openssl not found",
                       "install it (apt-get install openssl) or pass --cert and --key") from None
    if done.returncode != 0:
        raise SloError(f"openssl could not make a certificate in {directory}: {done.stderr.strip()}",
                       "check that the directory is writable, or pass --cert and --key")
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    return cert, key

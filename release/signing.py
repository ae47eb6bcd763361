"""The release key (Ed25519, PEM) and the DSSE envelope that signs the provenance.

Signing and verifying use securesystemslib's reference DSSE implementation (Envelope,
CryptoSigner, SSlibKey); keys are read and written with pyca/cryptography. The key id
in the envelope is securesystemslib's default: the SHA-256 of the public key's
canonical JSON form, so a verifier computes it from the public key alone.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from release.artifacts import ReleaseError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
PASSWORD_ENV = "RELEASE_KEY_PASSWORD"  # optional: the private key file is encrypted with it


def public_key_path(key: Path) -> Path:
    """release-ed25519.pem -> release-ed25519.pub.pem (any other name: NAME.pub.pem)."""
    stem = key.name.removesuffix(".pem")
    return key.with_name(f"{stem}.pub.pem")


def _password() -> bytes | None:
    value = os.environ.get(PASSWORD_ENV)
    return value.encode() if value else None


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate(key: Path) -> tuple[bool, Path]:
    """A new key pair at `key` (0600, its folder 0700) and the public key beside it,
    unless `key` exists: then only a missing public key is written. Returns
    (generated, public key path)."""
    pub = public_key_path(key)
    if key.exists():
        private = load_private(key)
        if not pub.exists():
            pub.write_bytes(public_pem(private.public_key()))
        return False, pub
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    password = _password()
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub.write_bytes(public_pem(private.public_key()))
    return True, pub


def load_private(key: Path) -> Ed25519PrivateKey:
    name = str(key)
    if not key.is_file():
        raise ReleaseError(name, "release key not found: `make release-key` makes one "
                                 "(or point RELEASE_KEY at the release engineer's key)")
    if key.stat().st_mode & 0o077:
        print(f"release: warning: {name} is readable by others than its owner (chmod 600 it)", file=sys.stderr)
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), _password())
    except TypeError as exc:
        raise ReleaseError(name, f"cannot open the key: {exc} (set {PASSWORD_ENV})") from None
    except ValueError as exc:
        raise ReleaseError(name, f"not a PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ReleaseError(name, f"not an Ed25519 key ({type(private).__name__})")
    return private


def load_public(path: Path) -> Ed25519PublicKey:
    """The public half (like load_private, without the password and permission checks)."""
    name = str(path)
    if not path.is_file():
        raise ReleaseError(name, "public key not found (pass RELEASE_PUB=the release's public key)")
    try:
        public = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise ReleaseError(name, f"not a PEM public key: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ReleaseError(name, f"not an Ed25519 public key ({type(public).__name__})")
    return public


def sslib_key(public: Ed25519PublicKey) -> SSlibKey:
    return SSlibKey.from_crypto(public, scheme="ed25519")


def envelope_bytes(envelope: Envelope) -> bytes:
    """The envelope file: one line of compact JSON with sorted keys (.intoto.jsonl)."""
    return json.dumps(envelope.to_dict(), sort_keys=True, separators=(",", ":")).encode() + b"\n"


def sign(payload: bytes, private: Ed25519PrivateKey) -> bytes:
    envelope = Envelope(payload, PAYLOAD_TYPE, {})
    envelope.sign(CryptoSigner(private, sslib_key(private.public_key())))
    return envelope_bytes(envelope)


def verify(data: bytes, public: Ed25519PublicKey, *, name: str, key_name: str) -> bytes:
    """The payload of the envelope file `data` once its signature verifies with `public`.
    The file must be exactly what `sign` writes: any other byte sequence is refused,
    even one that decodes to the same envelope."""
    try:
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or set(doc) != {"payload", "payloadType", "signatures"}:
            raise ValueError("not a DSSE envelope (payload, payloadType, signatures)")
        envelope = Envelope.from_dict(copy.deepcopy(doc))
        base64.b64decode(doc["payload"], validate=True)
    except Exception as exc:  # noqa: BLE001 -- bad UTF-8 or JSON, missing fields, bad base64 or signatures
        raise ReleaseError(name, f"unreadable DSSE envelope: {type(exc).__name__}: {exc}") from None
    if envelope_bytes(envelope) != data:
        raise ReleaseError(name, "the envelope is not byte-for-byte as signed (altered)")
    key = sslib_key(public)
    try:
        envelope.verify([key], 1)
    except VerificationError:
        if key.keyid in envelope.signatures:
            why = "the payload or the signature was altered"
        else:
            why = f"signed by another key (key id {', '.join(k[:16] for k in envelope.signatures) or 'none'})"
        raise ReleaseError(name, f"DSSE signature does not verify with {key_name} (key id {key.keyid[:16]}): "
                                 f"{why}") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise ReleaseError(name, f"payloadType is {envelope.payload_type!r}, not {PAYLOAD_TYPE!r}")
    return envelope.payload

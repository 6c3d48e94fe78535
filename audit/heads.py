"""Exported heads: the line an outside party keeps about the chain, signed with a key the database never sees.

A head says "at this time the chain held `count` events and the last one was
#`head_id` with hash `hash`". Someone who can write the database can re-hash
the chain from any point on, or cut its tail, and the chain alone still
verifies; it cannot make a head it did not sign match, and it cannot sign
without the private key (a file or an environment variable, never the database).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

HEAD_LINE = re.compile(
    r"(?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) events=(?P<count>\d+) head_id=(?P<head_id>\d+)"
    r" head=(?P<hash>[0-9a-f]{64})(?: sig=(?P<signature>[A-Za-z0-9+/]+=*))?"
)
# What is signed starts with this, so a signature over a head can never be
# taken for a signature over anything else made with the same key.
_CONTEXT = b"jitportal audit head v1\n"
_KEY_FORMS = "a PEM Ed25519 private key (openssl genpkey -algorithm ed25519) or the base64 of its 32 raw bytes"


class HeadFileError(ValueError):
    """A heads file or key that cannot be read, with what to fix."""


@dataclasses.dataclass(frozen=True)
class Head:
    at: str
    count: int
    head_id: int
    hash: str
    signature: str = ""
    line_no: int = 0

    @property
    def text(self) -> str:
        """Return the signed part of the line."""
        return f"{self.at} events={self.count} head_id={self.head_id} head={self.hash}"

    @property
    def line(self) -> str:
        return f"{self.text} sig={self.signature}" if self.signature else self.text

    def __str__(self) -> str:
        return f"the head exported at {self.at} (events={self.count}, head_id={self.head_id})"

    def signed_with(self, key: Ed25519PrivateKey) -> Head:
        signature = base64.b64encode(key.sign(_CONTEXT + self.text.encode())).decode()
        return dataclasses.replace(self, signature=signature)

    def signed_by(self, public_key: Ed25519PublicKey) -> bool:
        """Return whether the head carries a signature made with the private half of `public_key`."""
        if not self.signature:
            return False
        try:
            public_key.verify(base64.b64decode(self.signature), _CONTEXT + self.text.encode())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def parse_head(line: str, line_no: int = 0) -> Head | None:
    match = HEAD_LINE.fullmatch(line.strip())
    if match is None:
        return None
    return Head(
        at=match["at"],
        count=int(match["count"]),
        head_id=int(match["head_id"]),
        hash=match["hash"],
        signature=match["signature"] or "",
        line_no=line_no,
    )


def read_heads(path: str) -> list[Head]:
    """Return the heads in the file at `path` (blank lines and # comments skipped), or say which line is wrong."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise HeadFileError(f"Cannot read the heads file {path}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise HeadFileError(f"The heads file {path} is not UTF-8 text.") from None
    heads = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        head = parse_head(line, number)
        if head is None:
            raise HeadFileError(
                f"{path}, line {number}: not a head line; expected "
                f"'YYYY-MM-DDTHH:MM:SSZ events=N head_id=I head=<64 hex digits> [sig=<base64>]' "
                f"as `manage.py audit head` writes it."
            )
        heads.append(head)
    return heads


def load_private_key(text: str) -> Ed25519PrivateKey:
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error):
        raise HeadFileError(f"not {_KEY_FORMS}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise HeadFileError(f"not an Ed25519 key; expected {_KEY_FORMS}")
    return key


def load_public_key(text: str) -> Ed25519PublicKey:
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error):
        raise HeadFileError(
            "not an Ed25519 public key: expected the PEM that `manage.py audit pubkey` prints, "
            "or the base64 of its 32 raw bytes"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise HeadFileError("not an Ed25519 public key: expected the PEM that `manage.py audit pubkey` prints")
    return key


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def signing_key() -> Ed25519PrivateKey | None:
    """Return the configured signing key, or None when heads are exported unsigned."""
    return _signing_key(getattr(settings, "AUDIT_SIGNING_KEY", ""))


@functools.cache
def _signing_key(text: str) -> Ed25519PrivateKey | None:
    if not text:
        return None
    try:
        return load_private_key(text)
    except HeadFileError as exc:
        raise ImproperlyConfigured(f"AUDIT_SIGNING_KEY (or AUDIT_SIGNING_KEY_FILE): {exc}.") from None

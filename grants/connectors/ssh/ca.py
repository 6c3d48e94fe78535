"""The portal's SSH certificate authority: keys, user certificates and KRLs.

Pure functions around two tools: the `cryptography` package builds and
signs OpenSSH certificates in memory (no key or certificate ever touches a
temporary file), and `ssh-keygen`, which ships with OpenSSH itself, writes
and queries key revocation lists (KRLs), so a KRL means exactly what sshd's
`RevokedKeys` will make of it.

Nothing here reads the environment or the portal's database; the SSH
connector (`connector.py` beside it) decides where keys and files live.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import ssh

# OpenSSH user certificate extensions a profile may switch on. Anything else
# is refused: a typo in a profile must not silently grant or drop a permission.
EXTENSIONS = (
    "permit-X11-forwarding",
    "permit-agent-forwarding",
    "permit-port-forwarding",
    "permit-pty",
    "permit-user-rc",
)
# What a certificate carries when the profile says nothing: a terminal, no
# forwarding. (ssh-keygen's own default is every permit-* extension.)
DEFAULT_OPTIONS = {"permit-pty": True}

MIN_RSA_BITS = 3072
MAX_PUBLIC_KEY_CHARS = 8192  # a 16384-bit RSA key is about 2,800 characters
SSH_KEYGEN_TIMEOUT_S = 30

_KEY_TYPES = {
    "ssh-ed25519": ed25519.Ed25519PublicKey,
    "ecdsa-sha2-nistp256": ec.EllipticCurvePublicKey,
    "ecdsa-sha2-nistp384": ec.EllipticCurvePublicKey,
    "ecdsa-sha2-nistp521": ec.EllipticCurvePublicKey,
    "ssh-rsa": rsa.RSAPublicKey,
}
_PRINCIPAL_RE = re.compile(r"[A-Za-z0-9_.@+][A-Za-z0-9_.@+=-]{0,127}")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class SSHKeygenError(Exception):
    """`ssh-keygen` is missing or failed; the message carries its stderr."""


# -- keys --------------------------------------------------------------------


def generate_ca(path: str | os.PathLike, *, comment: str = "jitportal-ca") -> str:
    """Create an ed25519 CA key at `path` (mode 0600) and `path`.pub beside it; return the public line.

    Refuses to overwrite an existing key: replacing a CA silently would lock
    out every host that trusts the old one, and leave its KRL meaningless.
    """
    path = os.fspath(path)
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = public_key_line(key.public_key(), comment=comment)
    # O_EXCL: two admins running the command at once get one CA, not two.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    with open(path + ".pub", "w", encoding="ascii") as fh:
        fh.write(public + "\n")
    os.chmod(path + ".pub", 0o644)
    return public


def load_ca(path: str | os.PathLike) -> ssh.SSHCertPrivateKeyTypes:
    """Load an unencrypted OpenSSH private key usable as a CA; raise ValueError with a clear message."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ValueError(f"cannot read the CA key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except TypeError:
        raise ValueError(
            f"the CA key {path} is encrypted; the portal needs it unencrypted (protect it with file permissions)"
        ) from None
    except (ValueError, ssh.UnsupportedAlgorithm):
        raise ValueError(f"{path} is not an OpenSSH private key (expected 'BEGIN OPENSSH PRIVATE KEY')") from None
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(f"the CA key {path} has a type that cannot sign certificates (use ed25519)")
    return key


def public_key_line(key, *, comment: str = "") -> str:
    """Return the OpenSSH public key line ("type base64 [comment]") of a public or private key."""
    if hasattr(key, "public_key"):
        key = key.public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode("ascii")
    return f"{line} {comment}" if comment else line


def generate_user_key(*, comment: str) -> tuple[str, str]:
    """Create an ed25519 key pair for a user who gave no public key; return (private OpenSSH text, public line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return private.decode("ascii"), public_key_line(key, comment=comment)


def validate_public_key(text: str) -> str:
    """Check a pasted OpenSSH public key and return it as "type base64" (comment dropped).

    Accepted: ssh-ed25519, ecdsa-sha2-nistp256/384/521, and ssh-rsa of at
    least 3072 bits, as one line without an authorized_keys options prefix.
    Raises ValueError with a message fit to show the user.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Paste your OpenSSH public key (the one line in your .pub file).")
    if "PRIVATE KEY" in text:
        raise ValueError(
            "This is a private key. Never paste it anywhere: paste the public key (the .pub file) instead."
        )
    text = text.strip()
    if len(text) > MAX_PUBLIC_KEY_CHARS:
        raise ValueError(f"This is too long for an SSH public key (at most {MAX_PUBLIC_KEY_CHARS} characters).")
    if "\n" in text or "\r" in text:
        raise ValueError("Paste exactly one public key, on one line.")
    if "\x00" in text or not text.isprintable():
        raise ValueError("The public key contains control characters.")
    if text.startswith("---- BEGIN SSH2 PUBLIC KEY"):
        raise ValueError(
            "This is an RFC 4716 (SSH2) key; convert it with `ssh-keygen -i -f key.pub` and paste the result."
        )
    parts = text.split()
    if len(parts) < 2:
        raise ValueError("An OpenSSH public key looks like 'ssh-ed25519 AAAA... comment'.")
    key_type, blob = parts[0], parts[1]
    if key_type == "ssh-dss":
        raise ValueError(
            "DSA keys are insecure and no longer accepted by OpenSSH; use an ed25519 key (ssh-keygen -t ed25519)."
        )
    if key_type.endswith("-cert-v01@openssh.com"):
        raise ValueError("This is a certificate; paste the plain public key it was made for.")
    if key_type.startswith("sk-"):
        raise ValueError("Security-key (FIDO) keys are not supported yet; use an ed25519 key (ssh-keygen -t ed25519).")
    if key_type not in _KEY_TYPES:
        if any(t in text for t in _KEY_TYPES):
            raise ValueError("Remove the options in front of the key type: paste just 'type key [comment]'.")
        raise ValueError(
            f"Unsupported key type {key_type[:40]!r}; use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa."
        )
    if not _BASE64_RE.fullmatch(blob):
        raise ValueError("The key data is not valid base64; copy the whole line again.")
    try:
        # binascii checks the padding that the regex cannot.
        raw = base64.b64decode(blob, validate=True)
        key = serialization.load_ssh_public_key(f"{key_type} {blob}".encode("ascii"))
    except (binascii.Error, ValueError, ssh.UnsupportedAlgorithm):
        raise ValueError("The key data is damaged or does not match its type; copy the whole line again.") from None
    if not raw or not isinstance(key, _KEY_TYPES[key_type]):
        raise ValueError("The key data does not match its type.")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(
            f"This RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required (or use ed25519)."
        )
    return public_key_line(key)


# -- certificates ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CertificateInfo:
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    critical_options: dict[str, str]
    extensions: tuple[str, ...]
    ca_public_key: str


def check_principals(principals) -> list[str]:
    """Return the principals as a list of names; refuse an empty list.

    A certificate without principals is valid for *every* account on every
    host that trusts the CA, so an empty or missing list is an error, never
    a default.
    """
    if isinstance(principals, str) or not isinstance(principals, (list, tuple)) or not principals:
        raise ValueError("'principals' must be a non-empty list of names")
    bad = [p for p in principals if not isinstance(p, str) or not _PRINCIPAL_RE.fullmatch(p)]
    if bad:
        raise ValueError(f"invalid principal name(s): {', '.join(map(repr, bad))}")
    if len(principals) > 256:
        raise ValueError("at most 256 principals")
    return list(dict.fromkeys(principals))


def extensions_from_options(options) -> list[str]:
    """Turn a profile's {"permit-pty": true, ...} into the extension names to set."""
    if options is None:
        options = DEFAULT_OPTIONS
    if not isinstance(options, dict):
        raise ValueError("'options' must be a mapping of extension name to true/false")
    unknown = sorted(set(options) - set(EXTENSIONS))
    if unknown:
        raise ValueError(f"unknown certificate option(s) {', '.join(unknown)}; known: {', '.join(EXTENSIONS)}")
    not_bool = sorted(name for name, value in options.items() if not isinstance(value, bool))
    if not_bool:
        raise ValueError(f"option(s) {', '.join(not_bool)} must be true or false")
    return sorted(name for name, value in options.items() if value)


def critical_options(*, force_command=None, source_address=None) -> dict[str, str]:
    """Build the force-command and source-address critical options, checked."""
    result = {}
    if force_command is not None:
        if (
            not isinstance(force_command, str)
            or not force_command.strip()
            or any(c in force_command for c in "\x00\r\n")
        ):
            raise ValueError("'force_command' must be a one-line command")
        result["force-command"] = force_command
    if source_address is not None:
        items = source_address.split(",") if isinstance(source_address, str) else source_address
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError("'source_address' must be a list of addresses or CIDR ranges")
        cidrs = []
        for item in items:
            try:
                cidrs.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
            except ValueError:
                raise ValueError(f"invalid source address {item!r}") from None
        result["source-address"] = ",".join(cidrs)
    return result


def sign_user_certificate(
    ca_key,
    public_key: str,
    *,
    serial: int,
    key_id: str,
    principals: list[str],
    valid_after: int,
    valid_before: int,
    extensions: Iterable[str] = (),
    options: dict[str, str] | None = None,
) -> str:
    """Sign a user certificate for `public_key` (an OpenSSH line); return the certificate line.

    Times are Unix seconds; sshd accepts the certificate while
    valid_after <= now < valid_before.
    """
    key = serialization.load_ssh_public_key(public_key.encode("ascii"))
    if isinstance(key, ssh.SSHCertificate) or not isinstance(
        key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)
    ):
        raise ValueError("unsupported public key type")
    builder = (
        ssh.SSHCertificateBuilder()
        .public_key(key)
        .serial(serial)
        .type(ssh.SSHCertificateType.USER)
        .key_id(key_id.encode("utf-8"))
        .valid_principals([p.encode("utf-8") for p in check_principals(principals)])
        .valid_after(valid_after)
        .valid_before(valid_before)
    )
    for name, value in sorted((options or {}).items()):
        builder = builder.add_critical_option(name.encode("ascii"), value.encode("utf-8"))
    for name in sorted(set(extensions)):
        builder = builder.add_extension(name.encode("ascii"), b"")
    cert = builder.sign(ca_key)
    return cert.public_bytes().decode("ascii")


def parse_certificate(line: str) -> CertificateInfo:
    """Read the fields of an OpenSSH certificate line (the signature is not verified)."""
    cert = ssh.load_ssh_public_identity(line.strip().encode("ascii"))
    if not isinstance(cert, ssh.SSHCertificate):
        raise ValueError("not an OpenSSH certificate")
    return CertificateInfo(
        serial=cert.serial,
        key_id=cert.key_id.decode("utf-8", "replace"),
        principals=tuple(p.decode("utf-8", "replace") for p in cert.valid_principals),
        valid_after=cert.valid_after,
        valid_before=cert.valid_before,
        critical_options={k.decode(): v.decode("utf-8", "replace") for k, v in cert.critical_options.items()},
        extensions=tuple(sorted(k.decode() for k in cert.extensions)),
        ca_public_key=public_key_line(cert.signature_key()),
    )


def probe_certificate(ca_key, serial: int) -> str:
    """Return a certificate that can only be used to ask a KRL "is `serial` revoked?".

    It is expired since 1970-01-01T00:00:01, names a principal no account
    has, and its private key is thrown away at once, so it opens nothing;
    KRL lookups ignore validity, so `ssh-keygen -Q` answers for the serial.
    """
    throwaway = ed25519.Ed25519PrivateKey.generate()
    return sign_user_certificate(
        ca_key,
        public_key_line(throwaway),
        serial=serial,
        key_id="jitportal-krl-probe",
        principals=["jitportal-krl-probe"],
        valid_after=0,
        valid_before=1,
    )


# -- revocation lists --------------------------------------------------------


def build_krl(ca_public_key: str, serials: Iterable[int], *, version: int = 0) -> bytes:
    """Return a KRL revoking `serials` of certificates signed by the CA (`ssh-keygen -k`)."""
    serials = sorted({int(s) for s in serials})
    if serials and serials[0] <= 0:
        raise ValueError("certificate serials in a KRL must be positive")
    lines = [f"serial: {s}\n" for s in serials]
    with tempfile.TemporaryDirectory(prefix="jitportal-krl-") as tmp:
        ca_pub, spec, krl = (os.path.join(tmp, name) for name in ("ca.pub", "spec", "krl"))
        with open(ca_pub, "w", encoding="ascii") as fh:
            fh.write(ca_public_key.strip() + "\n")
        with open(spec, "w", encoding="ascii") as fh:
            fh.writelines(lines)
        _ssh_keygen("-k", "-z", str(int(version)), "-f", krl, "-s", ca_pub, spec)
        with open(krl, "rb") as fh:
            return fh.read()


def krl_revokes(krl_path: str | os.PathLike, certificate: str) -> bool:
    """Ask `ssh-keygen -Q` whether the KRL file revokes the certificate; raise SSHKeygenError if unreadable."""
    with tempfile.TemporaryDirectory(prefix="jitportal-krlq-") as tmp:
        cert_path = os.path.join(tmp, "cert.pub")
        with open(cert_path, "w", encoding="ascii") as fh:
            fh.write(certificate.strip() + "\n")
        result = _run_ssh_keygen("-Q", "-f", os.fspath(krl_path), cert_path)
    if result.returncode == 0:
        return False
    if result.returncode == 1 and b"REVOKED" in result.stdout:
        return True
    raise SSHKeygenError(_failure("-Q", result))


def ssh_keygen_path() -> str | None:
    return shutil.which("ssh-keygen")


def _ssh_keygen(*args: str) -> None:
    result = _run_ssh_keygen(*args)
    if result.returncode != 0:
        raise SSHKeygenError(_failure(args[0], result))


def _run_ssh_keygen(*args: str) -> subprocess.CompletedProcess:
    path = ssh_keygen_path()
    if path is None:
        raise SSHKeygenError("ssh-keygen is not installed (Debian package openssh-client)")
    try:
        return subprocess.run(
            [path, *args], capture_output=True, timeout=SSH_KEYGEN_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise SSHKeygenError(f"ssh-keygen {args[0]} did not finish within {SSH_KEYGEN_TIMEOUT_S} s") from None


def _failure(action: str, result: subprocess.CompletedProcess) -> str:
    err = " ".join(result.stderr.decode("utf-8", "replace").split())
    return f"ssh-keygen {action} failed (exit {result.returncode}): {err or 'no message'}"

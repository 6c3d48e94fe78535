"""SSH connector: a short-lived OpenSSH user certificate per grant, revoked through a KRL.

The target enforces expiry itself: sshd refuses a certificate outside its
validity window even if the portal's workers are down. sshd does not end a
session opened before that moment; the session guard on the host
(`contrib/ssh-session-guard/jit-session-guard`, run as sshd's `ForceCommand`) ends it
at expiry or as soon as the serial shows up in the KRL.

What is issued. Serial = grant id (unique per CA while the portal's
database lives, deterministic, so revoking never needs the certificate
itself); key id = prefix + "grant-<id>"; principals from the scope;
valid_after = grant start minus CLOCK_SKEW_S (hosts whose clock lags the
portal's would otherwise refuse a brand-new certificate; the certificate
does not exist before it is issued, so this opens nothing earlier);
valid_before = expires_at rounded *down* to the second, never later.
Provisioning twice issues another certificate with the same serial;
revoking the serial ends both.

Target config: `krl_path` (where the KRL hosts use as `RevokedKeys` is
published; default: the CA key's path + ".krl"), `host`, `port`,
`user_hint` (for the connection example), optional `prefix` (key ids,
default "jitportal-"). The environment variable named by
`target.secret_env` (or NAME_FILE) holds the *path* of the CA's private key,
an unencrypted OpenSSH key file; the key never enters the database.

Grant scope: `principals` (required, non-empty: a certificate without
principals would be valid for every account), `options` (permit-* extensions
as true/false; default only permit-pty), optional `force_command` and
`source_address` (critical options). Grant params (from the request):
optional `public_key`; without it an ed25519 key pair is generated and its
private key returned in the credentials, shown once.

State beside the KRL, plain text, append-only, guarded by an flock on
`<krl>.lock` (one machine; see `_locked`):
  <krl>.revoked  revoked serials, the source of the KRL
  <krl>.issued   issued serials with their valid_before (for list_managed)
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import shlex
import tempfile
import time
from types import SimpleNamespace

from ..base import Connector, ConnectorError, GrantLike, Provisioned, RequestField, secret_from_env
from ..digest import SessionReportError
from . import ca as sshca

DEFAULT_PREFIX = "jitportal-"
CLOCK_SKEW_S = 60
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{0,40}")
# Left unquoted in the example command, so that the user's shell expands "~".
_SHELL_SAFE_RE = re.compile(r"[\w@%+=:,./~-]+")
_REVOKED, _ISSUED, _LOCK = ".revoked", ".issued", ".lock"
# Session reports from the hosts' guards: signed within this many seconds of the portal's clock.
REPORT_WINDOW_S = 300
MAX_REPORT_BYTES = 4096
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,99}")
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9-]{8,64}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class SSHConnector(Connector):
    """Issue OpenSSH user certificates from the portal's CA and revoke them by serial."""

    default_prefix = DEFAULT_PREFIX
    prefix_pattern = _PREFIX_RE
    prefix_rule = "letters, digits, '_', '.', '-' (at most 40)"

    request_fields = {
        "public_key": RequestField(
            "SSH public key",
            help_text="Paste your public key (ssh-ed25519 AAAA…). Empty: the portal makes a key pair, shown once.",
            multiline=True,
        )
    }

    def clean_params(self, params: dict) -> dict:
        """Validate the requester's public key, if given; without one the portal generates a key pair."""
        text = (params.get("public_key") or "").strip()
        if not text:
            return {}
        try:
            return {"public_key": sshca.validate_public_key(text)}
        except ValueError as exc:
            raise ValueError({"public_key": str(exc)}) from None

    def __init__(self, target):
        super().__init__(target)
        self._ca = None

    # -- naming and configuration ---------------------------------------------

    def serial(self, grant: GrantLike) -> int:
        """Return the certificate serial of a grant: its id, never user input."""
        serial = int(grant.pk)
        if serial <= 0:
            raise ConnectorError(f"Grant id {grant.pk!r} cannot be a certificate serial.", permanent=True)
        return serial

    def key_id(self, grant: GrantLike) -> str:
        return f"{self.prefix}grant-{int(grant.pk)}"

    def ca_key_path(self) -> str:
        return os.path.expanduser(self.admin_secret())

    @property
    def krl_path(self) -> str:
        path = self.target.config.get("krl_path")
        if path is not None and (not isinstance(path, str) or not path.strip()):
            raise ConnectorError(f"Target {self.target.name!r}: krl_path must be a file path.", permanent=True)
        return os.path.abspath(os.path.expanduser(path or self.ca_key_path() + ".krl"))

    # -- session reports (contrib/ssh-session-guard --report-url) ----------------

    def guard_host_secret(self, host: str) -> str:
        """Return the secret a host's guard signs its session reports with (`manage.py ssh_guard_secret`).

        Derived from the target's guard secret (the environment variable named
        by config `guard_secret_env`, or NAME_FILE) and the host's name, so
        each host holds its own: one host's secret signs no other host's reports.
        """
        if not _HOST_RE.fullmatch(host or ""):
            raise SessionReportError("The host name must be letters, digits, '.' and '-' (at most 100).")
        name = self.target.config.get("guard_secret_env")
        if not name or not isinstance(name, str):
            raise ConnectorError(
                f"Target {self.target.name!r} names no guard_secret_env: it takes no session reports.", permanent=True
            )
        value = secret_from_env(name)
        if len(value) < 16:
            raise ConnectorError(
                f"Environment variable {name} (guard secret of target {self.target.name!r}) is unset or shorter"
                " than 16 characters.",
                permanent=True,
            )
        label = b"jit-session-guard host " + host.encode("ascii")
        return hmac.new(value.encode("utf-8"), label, hashlib.sha256).hexdigest()

    def verify_session_report(self, *, host: str, timestamp: str, signature: str, body: bytes, now=None) -> dict:
        """Check a guard's signed session report and return it cleaned; raise SessionReportError saying why.

        The signature is HMAC-SHA256, keyed with the host's secret, over
        "<timestamp>.<body>"; a timestamp more than REPORT_WINDOW_S from the
        portal's clock is refused (a replay inside the window repeats a report
        already recorded, which changes nothing).
        """
        now = time.time() if now is None else now
        secret = self.guard_host_secret(host)
        if len(body) > MAX_REPORT_BYTES:
            raise SessionReportError(f"The report is larger than {MAX_REPORT_BYTES} bytes.")
        try:
            sent_at = int(timestamp)
        except (TypeError, ValueError):
            raise SessionReportError(
                "X-Jit-Timestamp must be the Unix time the report was signed.", http_status=403
            ) from None
        expected = hmac.new(
            secret.encode("ascii"), str(sent_at).encode("ascii") + b"." + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, (signature or "").strip().lower()):
            raise SessionReportError("The signature does not match this host's secret.", http_status=403)
        if abs(now - sent_at) > REPORT_WINDOW_S:
            raise SessionReportError(
                f"The report was signed {int(now - sent_at)} s from the portal's time (at most {REPORT_WINDOW_S} s):"
                " check the host's clock.",
                http_status=403,
            )
        try:
            report = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise SessionReportError("The report is not JSON.") from None
        return self._clean_report(report, host=host)

    def _clean_report(self, report, *, host: str) -> dict:
        if not isinstance(report, dict):
            raise SessionReportError("The report must be a JSON object.")
        serial = report.get("serial")
        if isinstance(serial, bool) or not isinstance(serial, int) or serial <= 0:
            raise SessionReportError("serial must be the certificate's serial, a positive integer.")
        key_id = report.get("key_id")
        if key_id != self.key_id(SimpleNamespace(pk=serial)):
            raise SessionReportError(f"key_id {key_id!r} is not the key id of serial {serial}.")
        session_id = report.get("session_id")
        if not isinstance(session_id, str) or not _SESSION_ID_RE.fullmatch(session_id):
            raise SessionReportError("session_id must be 8 to 64 letters, digits or '-'.")
        cleaned = {"grant_id": serial, "session_id": session_id, "host": host}
        for name in ("started_at", "ended_at"):
            value = report.get(name)
            if value is None and name == "ended_at":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 2**33:
                raise SessionReportError(f"{name} must be a Unix time.")
            cleaned[name] = datetime.datetime.fromtimestamp(value, datetime.UTC).isoformat(timespec="seconds")
        source = report.get("source", "")
        if not isinstance(source, str) or len(source) > 100:
            raise SessionReportError("source must be the client's address and port (SSH_CONNECTION).")
        cleaned["source"] = source
        for name in ("exit_status",):
            value = report.get(name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                    raise SessionReportError(f"{name} must be 0 to 255.")
                cleaned[name] = value
        ended_by = report.get("ended_by")
        if ended_by is not None:
            if ended_by not in ("expired", "revoked", "revocation list unreadable"):
                raise SessionReportError("ended_by must be expired, revoked or revocation list unreadable.")
            cleaned["ended_by"] = ended_by
        recording = report.get("recording_sha256")
        if recording is not None:
            if not isinstance(recording, str) or not _SHA256_RE.fullmatch(recording):
                raise SessionReportError("recording_sha256 must be 64 lowercase hex digits.")
            cleaned["recording_sha256"] = recording
        return cleaned

    def ca_public_key(self) -> str:
        """Return the CA's public key line, for the hosts' `TrustedUserCAKeys`."""
        return sshca.public_key_line(self._ca_key(), comment=f"jitportal-ca {self.target.name}")

    # -- interface --------------------------------------------------------------

    def provision(self, grant: GrantLike) -> Provisioned:
        """Sign a certificate for the grant's window and record its serial; refuse a revoked serial."""
        serial = self.serial(grant)
        expires_at = grant.expires_at
        if expires_at is None or expires_at.tzinfo is None:
            raise ValueError("grant.expires_at must be timezone-aware")
        valid_before = math.floor(expires_at.timestamp())
        if valid_before <= time.time():
            raise ConnectorError(f"Grant {grant.pk} has already expired; no certificate issued.", permanent=True)
        starts_at = getattr(grant, "starts_at", None)
        start = starts_at.timestamp() if starts_at is not None else time.time()
        valid_after = max(0, math.floor(start) - CLOCK_SKEW_S)

        scope = grant.scope or {}
        try:
            principals = sshca.check_principals(scope.get("principals"))
            extensions = sshca.extensions_from_options(scope.get("options"))
            critical = sshca.critical_options(
                force_command=scope.get("force_command"), source_address=scope.get("source_address")
            )
        except ValueError as exc:
            raise ConnectorError(f"The access profile's SSH scope is invalid: {exc}.", permanent=True) from None

        params = getattr(grant, "params", None) or {}
        private_key = None
        if params.get("public_key"):
            try:
                public_key = sshca.validate_public_key(params["public_key"])
            except ValueError as exc:
                raise ConnectorError(
                    f"The public key of grant {grant.pk} is not acceptable: {exc}", permanent=True
                ) from None
        else:
            private_key, public_key = sshca.generate_user_key(comment=self.key_id(grant))

        ca = self._ca_key()
        certificate = sshca.sign_user_certificate(
            ca,
            public_key,
            serial=serial,
            key_id=self.key_id(grant),
            principals=principals,
            valid_after=valid_after,
            valid_before=valid_before,
            extensions=extensions,
            options=critical,
        )
        with self._errors("issue a certificate"), self._locked():
            if serial in self._read_revoked():
                raise ConnectorError(
                    f"Serial {serial} (grant {grant.pk}) is in the KRL; a revoked grant cannot be provisioned again.",
                    permanent=True,
                )
            # The ledger line is written before the certificate leaves this
            # function: list_managed() must know every certificate out there.
            until = datetime.datetime.fromtimestamp(valid_before, datetime.UTC)
            self._append(self.krl_path + _ISSUED, f"{serial} {valid_before} {until:%Y-%m-%dT%H:%M:%SZ}\n")
            if not os.path.exists(self.krl_path):
                # sshd refuses every public key while its RevokedKeys file is missing.
                self._publish(self._read_revoked())

        credentials = self._credentials(grant, certificate, private_key, principals, until)
        return Provisioned(external_ref=f"serial:{serial}", credentials=credentials, expires_at=until)

    def extend(self, grant: GrantLike) -> None:
        """Refuse: a longer window needs a new certificate, which `provision` issues (same serial)."""
        raise ConnectorError(
            "An SSH certificate's validity is signed into it and cannot be moved; the holder needs a new certificate.",
            permanent=True,
        )

    def revoke(self, grant: GrantLike) -> None:
        """Add the grant's serial to the KRL and republish it; succeeds if already revoked."""
        self.revoke_serial(self.serial(grant))

    def revoke_serial(self, serial: int) -> None:
        """Add `serial` to the revoked serials (once) and republish the KRL (always, which also repairs it)."""
        serial = int(serial)
        if serial <= 0:
            raise ConnectorError(f"{serial} is not a certificate serial.", permanent=True)
        with self._errors("revoke serial " + str(serial)), self._locked():
            revoked = self._read_revoked()
            if serial not in revoked:
                self._append(
                    self.krl_path + _REVOKED,
                    f"{serial} {datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}\n",
                )
                revoked.add(serial)
            self._publish(revoked)

    def is_present(self, grant: GrantLike) -> bool:
        """Read the published KRL back: is a certificate of this grant issued, unexpired and not revoked there?

        The question is put to `ssh-keygen -Q`, sshd's own KRL code, with a
        probe certificate of the same serial (see `sshca.probe_certificate`).
        """
        serial = self.serial(grant)
        with self._errors("inspect serial " + str(serial)):
            valid_before = self._read_issued().get(serial)
            if valid_before is None or valid_before <= time.time():
                return False
            if not os.path.exists(self.krl_path):
                return True
            return not sshca.krl_revokes(self.krl_path, sshca.probe_certificate(self._ca_key(), serial))

    def list_managed(self) -> set[str]:
        """Return "serial:<n>" for every issued certificate not yet expired nor revoked."""
        now = time.time()
        with self._errors("list certificates"), self._locked():
            issued, revoked = self._read_issued(), self._read_revoked()
        return {f"serial:{s}" for s, valid_before in issued.items() if valid_before > now and s not in revoked}

    def check(self) -> list[str]:
        """Verify the CA key and the KRL's folder; warn about loose key permissions or a KRL not yet published."""
        if sshca.ssh_keygen_path() is None:
            raise ConnectorError("ssh-keygen is not installed (Debian package openssh-client).", permanent=True)
        warnings = []
        path = self.ca_key_path()
        ca_public = sshca.public_key_line(self._ca_key())
        mode = os.stat(path).st_mode
        if mode & 0o077:
            warnings.append(f"The CA key {path} is readable by others (mode {mode & 0o777:o}); chmod 600 it.")
        try:
            with open(path + ".pub", encoding="ascii") as fh:
                beside = fh.read().split()[:2]
            if beside != ca_public.split()[:2]:
                warnings.append(
                    f"{path}.pub is not the public half of the CA key; hosts configured from it will refuse "
                    "certificates."
                )
        except (OSError, UnicodeDecodeError):
            pass
        folder = os.path.dirname(self.krl_path)
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise ConnectorError(
                f"Cannot write the KRL of target {self.target.name!r}: {folder} is not a writable folder.",
                permanent=True,
            )
        if not os.path.exists(self.krl_path):
            warnings.append(
                f"No KRL has been published at {self.krl_path} yet; hosts using it as RevokedKeys refuse every "
                "key until it exists "
                "(it is written at the first certificate or revocation)."
            )
        else:
            try:
                sshca.krl_revokes(self.krl_path, sshca.probe_certificate(self._ca_key(), 1))
            except sshca.SSHKeygenError as exc:
                raise ConnectorError(
                    f"The KRL at {self.krl_path} is unreadable; hosts refuse every key until it is republished: {exc}"
                ) from None
        return warnings

    # -- KRL publication --------------------------------------------------------

    def publish_krl(self) -> None:
        """Rewrite the KRL from the revoked serials (idempotent; use after restoring files)."""
        with self._errors("publish the KRL"), self._locked():
            self._publish(self._read_revoked())

    def krl_bytes(self) -> bytes:
        """Return the published KRL, publishing it first if missing (for the portal's KRL URL)."""
        with self._errors("read the KRL"):
            if not os.path.exists(self.krl_path):
                self.publish_krl()
            with open(self.krl_path, "rb") as fh:
                return fh.read()

    def _publish(self, revoked: set[int]) -> None:
        # The version lets an operator see which KRL a host has (ssh-keygen -Ql).
        data = sshca.build_krl(sshca.public_key_line(self._ca_key()), revoked, version=int(time.time()))
        folder = os.path.dirname(self.krl_path)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".krl-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
                # Hosts (and the guard, which runs as the logged-in user) must read it.
                os.fchmod(fh.fileno(), 0o644)
            # A reader sees the old KRL or the new one, never half of one.
            os.replace(tmp, self.krl_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(folder)

    # -- state files --------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        # flock serialises workers on this machine only: with workers on several
        # machines, the KRL folder must be on storage that honours flock, or SSH
        # tasks must run on one machine.
        fd = os.open(self.krl_path + _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_revoked(self) -> set[int]:
        return {serial for serial, _ in self._read_lines(self.krl_path + _REVOKED)}

    def _read_issued(self) -> dict[int, int]:
        """Return serial -> the latest valid_before among certificates issued with it."""
        issued: dict[int, int] = {}
        for serial, rest in self._read_lines(self.krl_path + _ISSUED):
            try:
                valid_before = int(rest.split()[0])
            except (IndexError, ValueError):
                raise ConnectorError(
                    f"Malformed line for serial {serial} in {self.krl_path + _ISSUED}.", permanent=True
                ) from None
            issued[serial] = max(valid_before, issued.get(serial, 0))
        return issued

    def _read_lines(self, path: str) -> list[tuple[int, str]]:
        try:
            with open(path, encoding="ascii") as fh:
                text = fh.read()
        except FileNotFoundError:
            return []
        rows = []
        # A final line without its newline is a torn append (a crash mid-write):
        # that call failed and will be retried, so the fragment means nothing.
        for line in text.split("\n")[:-1]:
            serial, _, rest = line.partition(" ")
            if not serial.isdigit():
                # Skipping a line could un-revoke a certificate: stop instead.
                raise ConnectorError(f"Malformed line {line[:40]!r} in {path}; fix it by hand.", permanent=True)
            rows.append((int(serial), rest))
        return rows

    def _append(self, path: str, line: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # Drop a torn fragment so it cannot merge with this line.
                with open(path, "rb") as fh:
                    keep = fh.read().rfind(b"\n") + 1
                os.ftruncate(fd, keep)
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- helpers ------------------------------------------------------------------

    def _ca_key(self):
        if self._ca is None:
            path = self.ca_key_path()
            try:
                self._ca = sshca.load_ca(path)
            except ValueError as exc:
                raise ConnectorError(f"Target {self.target.name!r}: {exc}.", permanent=True) from None
        return self._ca

    def _credentials(
        self, grant, certificate: str, private_key: str | None, principals: list[str], until
    ) -> dict[str, str]:
        config = self.target.config
        host = str(config.get("host") or self.target.name)
        user = str(config.get("user_hint") or principals[0])
        port = str(config.get("port") or "22")
        key_file = f"~/.ssh/{self.key_id(grant)}"
        cert_file = key_file + "-cert.pub"
        command = ["ssh"]
        if private_key is not None:
            # ssh picks up "<key>-cert.pub" beside the key given with -i.
            command += ["-i", key_file]
        else:
            # ssh pairs the certificate with the matching key from the agent or default identities.
            command += ["-o", f"CertificateFile={cert_file}"]
        if port != "22":
            command += ["-p", port]
        command.append(f"{user}@{host}")
        credentials = {
            "certificate": certificate,
            "certificate_file": cert_file,
            "principals": ", ".join(principals),
            "serial": str(self.serial(grant)),
            "key_id": self.key_id(grant),
            "valid_before": until.isoformat(),
            "ssh_command": " ".join(part if _SHELL_SAFE_RE.fullmatch(part) else shlex.quote(part) for part in command),
        }
        if private_key is not None:
            credentials["private_key"] = private_key
            credentials["private_key_file"] = key_file
        return credentials

    @contextlib.contextmanager
    def _errors(self, action: str):
        try:
            yield
        except ConnectorError:
            raise
        except sshca.SSHKeygenError as exc:
            raise ConnectorError(f"Cannot {action} for target {self.target.name!r}: {exc}") from None
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise ConnectorError(f"Cannot {action} for target {self.target.name!r}{where}: {exc.strerror}") from None


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Syslog (RFC 5424) over TCP with octet-counting framing (RFC 6587), optionally TLS (RFC 5425).

Options: `host`, `port` (default 514, 6514 with TLS), `tls` (true/false),
`ca_file` (the CA that signed the server's certificate; default the
system's), `server_name` (to check the certificate against; default
`host`), `hostname` (the HOSTNAME field; default this machine's name),
`facility` (default 10, authpriv), `timeout` (seconds, default 10).

Syslog over TCP has no acknowledgement. A batch counts as received once the
server has closed the connection after our end of stream: it has read every
byte we sent by then.
"""

from __future__ import annotations

import socket
import ssl

from django.core.exceptions import ImproperlyConfigured

from .base import Sink, SinkError, dumps

# RFC 5424 section 7.2.2: the enterprise number reserved for documentation; our SD-ID names only our fields.
SD_ID = "jitportal@32473"
SEVERITY_INFO = 6
BOM = "\ufeff"


def _sd_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(value: str, limit: int) -> str:
    text = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


class SyslogSink(Sink):
    options = ("host", "port", "tls", "ca_file", "server_name", "hostname", "facility", "timeout")

    def __init__(self, name, config):
        super().__init__(name, config)
        self.host = self.require("host")
        self.tls = bool(config.get("tls", False))
        self.port = int(config.get("port", 6514 if self.tls else 514))
        self.timeout = float(config.get("timeout", 10))
        self.facility = int(config.get("facility", 10))
        if not 0 <= self.facility <= 23:
            raise ImproperlyConfigured(f"AUDIT_SINKS {name}: facility must be 0 to 23.")
        self.hostname = _printable(config.get("hostname") or socket.gethostname(), 255)
        self.ca_file = config.get("ca_file") or None
        self.server_name = config.get("server_name") or self.host

    def message(self, record: dict) -> bytes:
        """Return one RFC 5424 message: the event's id and hashes as structured data, the record as MSG."""
        pri = self.facility * 8 + SEVERITY_INFO
        timestamp = record["created_at"].replace("+00:00", "Z")
        sd = (
            f'[{SD_ID} id="{record["id"]}" hash="{record["hash"]}" prev_hash="{record["prev_hash"]}"'
            f' action="{_sd_value(record["action"])}"]'
        )
        msgid = _printable(record["action"], 32)
        return f"<{pri}>1 {timestamp} {self.hostname} jitportal - {msgid} {sd} {BOM}{dumps(record)}".encode()

    def frames(self, records: list[dict]) -> bytes:
        out = bytearray()
        for record in records:
            message = self.message(record)
            out += b"%d " % len(message) + message
        return bytes(out)

    def connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise SinkError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        if not self.tls:
            return sock
        context = ssl.create_default_context(cafile=self.ca_file)
        try:
            return context.wrap_socket(sock, server_hostname=self.server_name)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise SinkError(f"TLS with {self.host}:{self.port} failed: {exc}", permanent=True) from None

    def send(self, records):
        data = self.frames(records)
        sock = self.connect()
        try:
            sock.sendall(data)
            if isinstance(sock, ssl.SSLSocket):
                # Our close_notify, and the server's answer to it: it has read every record before ours.
                try:
                    sock = sock.unwrap()
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                    return  # it closed the connection without answering, after reading to our end of stream
            sock.shutdown(socket.SHUT_WR)
            # Wait for the server to close its side: it has read the whole stream then.
            while sock.recv(4096):
                pass
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(f"sending to {self.host}:{self.port} failed: {exc}") from None
        finally:
            sock.close()

"""An HTTPS webhook: batches of records POSTed as JSON, signed with HMAC-SHA256.

Options: `url`, `secret` (or `secret_file`), `timeout` (seconds, default
10), `tries` (within one delivery, default 3; later deliveries back off),
`ca_file` (to check the server's certificate; default the system's CAs).

The body is `{"events": [record, ...]}`. Headers:
`X-Jitportal-Timestamp` (Unix seconds) and `X-Jitportal-Signature`
(`v1=` and the hex HMAC-SHA256, keyed with the secret, of the timestamp, a
`.`, and the body's bytes). A receiver recomputes it, compares in constant
time and refuses a timestamp far from its clock (a replay). Any 2xx is
success; anything else, or no answer, is retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests
from django.core.exceptions import ImproperlyConfigured

from .base import Sink, SinkError

TIMESTAMP_HEADER = "X-Jitportal-Timestamp"
SIGNATURE_HEADER = "X-Jitportal-Signature"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Return the value of X-Jitportal-Signature for this timestamp and body."""
    return "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSink(Sink):
    options = ("url", "secret", "secret_file", "timeout", "tries", "ca_file")
    batch_size = 100

    def __init__(self, name, config):
        super().__init__(name, config)
        self.url = self.require("url")
        self.secret = self.secret("secret")
        if not self.secret:
            raise ImproperlyConfigured(f"AUDIT_SINKS {name}: a webhook needs secret or secret_file.")
        if not self.url.startswith(("https://", "http://")):
            raise ImproperlyConfigured(f"AUDIT_SINKS {name}: url must be https:// (http:// only on a trusted network).")
        self.timeout = float(config.get("timeout", 10))
        self.tries = max(1, int(config.get("tries", 3)))
        self.verify = config.get("ca_file") or True

    def send(self, records):
        body = json.dumps({"events": records}, sort_keys=True, separators=(",", ":"), default=str).encode()
        error = ""
        for attempt in range(self.tries):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 4))
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: signature(self.secret, timestamp, body),
            }
            try:
                response = requests.post(
                    self.url,
                    data=body,
                    headers=headers,
                    timeout=self.timeout,
                    verify=self.verify,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                error = f"POST {self.url} failed: {exc.__class__.__name__}: {exc}"
                continue
            if 200 <= response.status_code < 300:
                return
            error = f"POST {self.url} answered {response.status_code}: {response.text[:200]}"
            if response.status_code in (400, 401, 403, 404, 405, 410, 413):
                # Retrying now cannot help (a wrong secret, URL or size); later deliveries still try.
                raise SinkError(error, permanent=True)
        raise SinkError(error)

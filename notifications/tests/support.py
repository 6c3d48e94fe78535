"""Real servers the notification tests talk to: an SMTP server (aiosmtpd) and Slack's Web API on loopback.

Slack itself cannot run here: a small HTTP server stands in for its Web API and an incoming webhook, and
the portal talks to it over HTTP exactly as it would to slack.com. Shared by notifications/tests and the
notification sections of the feature files (grants/tests/test_break_glass.py, ...), through the packages'
conftests.
"""

import email
import email.policy
import json
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

PORTAL = "https://jit.example.test"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-token"
SLACK_IDS = {
    "U0ANA": "ana@example.com",
    "U0MARC": "marc@example.com",
    "U0OTTO": "otto@example.com",
    "U0EVE": "eve@example.com",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mail:
    sender: str
    to: list  # the envelope's recipients
    to_header: str  # what the recipients see
    subject: str
    body: str


class Inbox:
    def __init__(self):
        self.mails: list[Mail] = []
        self.refuse: set[str] = set()  # recipients the server answers 550

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.mails.append(
            Mail(envelope.mail_from, sorted(envelope.rcpt_tos), str(msg["To"]), str(msg["Subject"]), msg.get_content())
        )
        return "250 Message accepted for delivery"

    def to(self, address):
        return [m for m in self.mails if address in m.to]


@pytest.fixture
def smtp(settings):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.DEFAULT_FROM_EMAIL = "jitportal <jitportal@example.test>"
    yield inbox
    controller.stop()


class FakeSlack:
    """Answers like Slack's Web API (users.*, chat.*) and an incoming webhook; records what it was sent."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.fail_next = 0  # answer this many calls with HTTP 500
        self.users = dict(SLACK_IDS)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def _handler(slack):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    body = json.loads(raw)
                else:
                    body = dict(urllib.parse.parse_qsl(raw))
                if slack.fail_next:
                    slack.fail_next -= 1
                    return self._answer(500, {"ok": False})
                if self.path == "/webhook":
                    slack.calls.append(("webhook", body))
                    return self._answer(200, "ok")
                method = self.path.removeprefix("/api/")
                if self.headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
                    return self._answer(200, {"ok": False, "error": "invalid_auth"})
                slack.calls.append((method, body))
                self._answer(200, slack.answer(method, body))

            def _answer(self, status, body):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def answer(self, method, body):
        if method == "users.lookupByEmail":
            found = [uid for uid, mail in self.users.items() if mail == body.get("email")]
            return {"ok": True, "user": {"id": found[0]}} if found else {"ok": False, "error": "users_not_found"}
        if method == "users.info":
            if body.get("user") not in self.users:
                return {"ok": False, "error": "user_not_found"}
            return {
                "ok": True,
                "user": {
                    "id": body["user"],
                    "deleted": False,
                    "is_bot": False,
                    "profile": {"email": self.users[body["user"]]},
                },
            }
        if method.startswith("chat."):
            return {"ok": True, "channel": body.get("channel"), "ts": body.get("ts") or "1700000000.000100"}
        return {"ok": False, "error": "unknown_method"}

    def sent(self, method, **match):
        return [body for m, body in self.calls if m == method and all(body.get(k) == v for k, v in match.items())]


@pytest.fixture
def fake_slack():
    slack = FakeSlack()
    thread = threading.Thread(target=slack.server.serve_forever, daemon=True)
    thread.start()
    yield slack
    slack.server.shutdown()
    slack.server.server_close()


@pytest.fixture
def slack(fake_slack, settings):
    """A Slack app with a bot token, a signing secret and a security channel."""
    settings.SLACK_API_URL = fake_slack.url + "/api"
    settings.SLACK_BOT_TOKEN = BOT_TOKEN
    settings.SLACK_SIGNING_SECRET = SIGNING_SECRET
    settings.SLACK_SECURITY_CHANNEL = "C0SECURITY"
    settings.SLACK_WEBHOOK_URL = ""
    return fake_slack


@pytest.fixture
def portal(settings, monkeypatch):
    settings.PORTAL_URL = PORTAL
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_SECURITY_CHANNEL", "SLACK_WEBHOOK_URL"):
        setattr(settings, name, "")
    settings.SECURITY_EMAIL = []
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)  # enqueued tasks run in this process


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    """Run a lifecycle call and then, as the workers would, the tasks it enqueued after commit."""

    def run(func, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return func(*args, **kwargs)

    return run

"""`jit`: ask jitportal for access, decide, release, from a terminal or a CI job.

Results go to standard output, progress and errors to standard error, so
that `eval "$(jit request ... --env)"` sees only the export lines.
Exit codes: 0 done; 1 refused, denied or failed (the portal's message is
printed); 2 wrong usage or configuration; 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import sys
import time

from . import ApiError, Client, ConfigError, __version__, read_config

OK, REFUSED, USAGE = 0, 1, 2
ENDED = {"denied", "cancelled", "lapsed"}
# Where a field the portal names comes from on our command line.
OPTIONS = {
    "profile": "PROFILE",
    "duration_seconds": "--for",
    "justification": "--why",
    "ticket": "--ticket",
    "starts_at": "--start",
    "comment": "--comment",
    "public_key": "--public-key",
}
_PART = re.compile(r"(\d+)(d|h|m|s)?")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1, None: 60}


class Refused(Exception):
    """The request was denied, the access failed, or waiting gave up."""


def parse_duration(text: str) -> int:
    """Return seconds for '90s', '30m', '2h', '1h30m', '1d' (a bare number is minutes, as in the portal)."""
    compact = text.strip().lower().replace(" ", "")
    pos, seconds = 0, 0
    while pos < len(compact):
        match = _PART.match(compact, pos)
        if not match:
            break
        seconds += int(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 30m, 1h, 1h30m or 1d")
    return seconds


def human(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return "".join(parts) or f"{secs}s"


def when(text: str | None) -> str:
    if not text:
        return "-"
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def seconds_until(text: str) -> float:
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - datetime.datetime.now(datetime.timezone.utc)).total_seconds()


def say(*parts):
    print(*parts, file=sys.stderr, flush=True)


def out(text: str = ""):
    print(text, flush=True)


def print_json(data):
    out(json.dumps(data, indent=2, sort_keys=True))


def table(rows: list[list[str]], header: list[str]):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


# What a request looks like ------------------------------------------------------------


def grant_line(grant: dict | None) -> str:
    if not grant:
        return "-"
    status = grant["status"]
    if status == "active" and grant["is_active"]:
        return (
            f"#{grant['id']} active until {when(grant['expires_at'])} "
            f"({human(max(0, seconds_until(grant['expires_at'])))} left)"
        )
    if status == "active":
        return f"#{grant['id']} expired at {when(grant['expires_at'])}, being removed"
    if status in ("revoking", "revoked"):
        ended = f"{status} ({grant['end_reason']})" if grant["end_reason"] else status
        return f"#{grant['id']} {ended}"
    if status == "failed":
        return f"#{grant['id']} failed: {grant['last_error']}"
    return f"#{grant['id']} {status}" + (f" (retrying: {grant['last_error']})" if grant["last_error"] else "")


def describe(req: dict):
    out(f"Request #{req['id']}: {req['status']}")
    rows = [
        ("profile", f"{req['profile_title']} ({req['profile']}) on {req['target']}"),
        ("requester", req["requester"]),
        ("duration", human(req["duration_seconds"]) + (f" from {when(req['starts_at'])}" if req["starts_at"] else "")),
        ("why", req["justification"]),
    ]
    if req["ticket"]:
        rows.append(("ticket", req["ticket"]))
    if req["extends"]:
        rows.append(("extends", f"grant #{req['extends']}"))
    if req["waiting_for"]:
        rows.append(("waiting for", req["waiting_for"]))
    for approval in req["approvals"]:
        rows.append(
            (
                "approval",
                f"step {approval['step']} by {approval['approver']}"
                + (f": {approval['comment']}" if approval["comment"] else ""),
            )
        )
    if req["decided_at"]:
        by = req["decided_by"] or (f"policy ({req['auto_rule']})" if req["auto_rule"] else "the portal")
        rows.append(
            (
                "decided",
                f"{when(req['decided_at'])} by {by}"
                + (f": {req['decision_comment']}" if req["decision_comment"] else ""),
            )
        )
    rows.append(("grant", grant_line(req["grant"])))
    rows.append(("page", req["url"]))
    for key, value in rows:
        out(f"  {key + ':':<12} {value}")


def decision_text(req: dict, verb: str) -> str:
    if req["status"] == "pending":
        return f"Your approval of request #{req['id']} is recorded; it now waits for {req['waiting_for']}."
    return f"Request #{req['id']} {verb}."


# Credentials ----------------------------------------------------------------------------


def env_lines(kind: str, credentials: dict[str, str]) -> list[str]:
    """Return `export` lines for the credentials: the usual variables of the target's tools, else JIT_<FIELD>."""
    if "env" in credentials:  # the connector wrote them (AWS)
        return credentials["env"].splitlines()
    names: dict[str, str] = {}
    if kind == "postgres":
        names = {
            "host": "PGHOST",
            "port": "PGPORT",
            "dbname": "PGDATABASE",
            "username": "PGUSER",
            "password": "PGPASSWORD",
            "dsn": "DATABASE_URL",
        }
    elif kind == "mysql":
        names = {
            "host": "MYSQL_HOST",
            "port": "MYSQL_TCP_PORT",
            "username": "MYSQL_USER",
            "password": "MYSQL_PWD",
            "dsn": "DATABASE_URL",
        }
    elif "dsn" in credentials:
        names = {"dsn": "DATABASE_URL"}
    if not names:
        names = {key: "JIT_" + re.sub(r"[^A-Z0-9]", "_", key.upper()) for key in credentials}
    return [f"export {name}={shlex.quote(credentials[key])}" for key, name in names.items() if credentials.get(key)]


def show_credentials(revealed: dict, *, as_env: bool):
    creds = revealed["credentials"]
    say(
        f"Credentials for grant #{revealed['grant']} ({revealed['kind']}), valid until "
        f"{when(revealed['expires_at'])}; shown once."
    )
    if as_env:
        out(f"# jitportal grant #{revealed['grant']}, until {when(revealed['expires_at'])}")
        out(f"export JIT_REQUEST_ID={int(revealed['request'])}")  # for `jit release "$JIT_REQUEST_ID"`
        for line in env_lines(revealed["kind"], creds):
            out(line)
        return
    for key, value in creds.items():
        if "\n" in value.strip():
            out(f"{key}:")
            for line in value.rstrip("\n").splitlines():
                out(f"    {line}")
        else:
            out(f"{key}: {value}")


# Commands --------------------------------------------------------------------------------


def cmd_profiles(client: Client, args) -> int:
    profiles = client.get("/profiles")
    if args.json:
        print_json(profiles)
        return OK
    if not profiles:
        say("There is no access profile you may request.")
        return OK
    table(
        [
            [
                p["name"],
                p["target"],
                human(p["default_duration_seconds"]),
                human(p["max_duration_seconds"]),
                p["approvers"],
                p["title"],
            ]
            for p in profiles
        ],
        ["NAME", "TARGET", "DEFAULT", "MAX", "APPROVED BY", "TITLE"],
    )
    return OK


def _wait(client: Client, req: dict, *, timeout: int, poll: float) -> dict:
    """Poll until the request is decided and its access is ready; return the request, or raise Refused."""
    deadline = time.monotonic() + timeout
    shown = None
    while True:
        grant = req["grant"]
        state = (req["status"], grant and grant["status"], req["waiting_for"])
        if state != shown:
            shown = state
            if req["status"] == "pending":
                say(f"Request #{req['id']} waits for {req['waiting_for']}.")
            elif req["status"] == "approved" and grant and grant["status"] == "scheduled":
                by = req["decided_by"] or f"policy ({req['auto_rule']})"
                start = f"; the window starts {when(req['starts_at'])}" if req["starts_at"] else ""
                say(f"Request #{req['id']} approved by {by}; setting up the access{start}.")
        if req["status"] in ENDED:
            reason = f" by {req['decided_by']}" if req["decided_by"] else ""
            comment = f": {req['decision_comment']}" if req["decision_comment"] else ""
            raise Refused(f"Request #{req['id']} was {req['status']}{reason}{comment}")
        if req["status"] == "approved" and grant:
            if grant["status"] == "active" and grant["is_active"]:
                if grant["credentials_available"]:
                    return req
                raise Refused(
                    f"The credentials of grant #{grant['id']} were already shown once; release it and request again."
                )
            if grant["status"] != "scheduled":  # failed, ended, or expired already
                raise Refused(f"Grant #{grant['id']} of request #{req['id']} is {grant_line(grant)}.")
        left = deadline - time.monotonic()
        if left <= 0:
            raise Refused(
                f"Gave up waiting after {human(timeout)}; request #{req['id']} is {req['status']} (see `jit "
                f"status {req['id']}`)."
            )
        time.sleep(min(poll, left))
        try:
            req = client.get(f"/requests/{req['id']}")
        except ApiError as exc:
            if exc.status in (0, 429) or exc.status >= 500:  # a blip: keep waiting
                say(f"({exc.message} Retrying.)")
                time.sleep(min(exc.retry_after or poll, max(0, deadline - time.monotonic())))
                continue
            raise


def cmd_request(client: Client, args) -> int:
    body = {"profile": args.profile, "duration_seconds": args.duration, "justification": args.why}
    if args.ticket:
        body["ticket"] = args.ticket
    if args.start:
        body["starts_at"] = args.start
    if args.public_key:
        body["public_key"] = args.public_key
    req = client.post("/requests", body)
    if not args.wait:
        if args.json:
            print_json(req)
        else:
            waiting = f", waiting for {req['waiting_for']}" if req["waiting_for"] else ""
            out(f"Request #{req['id']} {req['status']}{waiting}.")
            out(req["url"])
        return OK
    say(f"Request #{req['id']} sent: {req['url']}")
    try:
        req = _wait(client, req, timeout=args.timeout, poll=args.poll)
    except KeyboardInterrupt:
        say(f"\nStopped waiting; request #{req['id']} stays as it is (`jit cancel {req['id']}` withdraws it).")
        return 130
    revealed = client.get(f"/requests/{req['id']}/credentials")
    if args.json:
        print_json({"request": req, "credentials": revealed})
    else:
        show_credentials(revealed, as_env=args.env)
    return OK


def cmd_status(client: Client, args) -> int:
    if args.id is not None:
        req = client.get(f"/requests/{args.id}")
        if args.json:
            print_json(req)
        else:
            describe(req)
        return OK
    requests = client.get("/requests")
    if args.json:
        print_json(requests)
        return OK
    if not requests:
        say("You have made no requests.")
        return OK
    table(
        [
            [str(r["id"]), r["status"], r["profile"], human(r["duration_seconds"]), grant_line(r["grant"])]
            for r in requests
        ],
        ["ID", "STATUS", "PROFILE", "FOR", "GRANT"],
    )
    return OK


def cmd_inbox(client: Client, args) -> int:
    pending = client.get("/inbox")
    if args.json:
        print_json(pending)
        return OK
    if not pending:
        say("Nothing waits for your decision.")
        return OK
    table(
        [
            [str(r["id"]), r["requester"], r["profile"], human(r["duration_seconds"]), r["justification"][:60]]
            for r in pending
        ],
        ["ID", "REQUESTER", "PROFILE", "FOR", "WHY"],
    )
    return OK


def cmd_decide(client: Client, args) -> int:
    verb = "approved" if args.command == "approve" else "denied"
    req = client.post(f"/requests/{args.id}/{args.command}", {"comment": args.comment or ""})
    if args.json:
        print_json(req)
    else:
        out(decision_text(req, verb))
    return OK


def cmd_cancel(client: Client, args) -> int:
    req = client.post(f"/requests/{args.id}/cancel")
    if args.json:
        print_json(req)
    else:
        out(f"Request #{req['id']} cancelled.")
    return OK


def cmd_release(client: Client, args) -> int:
    req = client.post(f"/requests/{args.id}/release")
    if args.json:
        print_json(req)
    else:
        out(
            f"Releasing grant #{req['grant']['id']} of request #{req['id']}: the access is being removed from "
            f"{req['target']}."
        )
    return OK


def cmd_extend(client: Client, args) -> int:
    ext = client.post(f"/requests/{args.id}/extend", {"duration_seconds": args.duration, "justification": args.why})
    if args.json:
        print_json(ext)
    elif ext["status"] == "approved":
        out(f"Extended: grant #{ext['grant']['id']} now ends {when(ext['grant']['expires_at'])}.")
    else:
        out(f"Extension request #{ext['id']} waits for {ext['waiting_for']}.")
    return OK


def cmd_credentials(client: Client, args) -> int:
    revealed = client.get(f"/requests/{args.id}/credentials")
    if args.json:
        print_json(revealed)
    else:
        show_credentials(revealed, as_env=args.env)
    return OK


# The command line -------------------------------------------------------------------------


def _request_id(text: str) -> int:
    value = text.lstrip("#")
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a request number")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the portal's JSON instead of text")
    parser = argparse.ArgumentParser(
        prog="jit",
        description="Ask jitportal for Just-In-Time access. Configure with JIT_URL and JIT_TOKEN (or "
        "~/.config/jit/config).",
        epilog="Exit codes: 0 done, 1 refused/denied/failed, 2 usage or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"jit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("profiles", parents=[common], help="list the profiles you may request")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("request", parents=[common], help="ask for access; by default wait and print the credentials")
    p.add_argument("profile", metavar="PROFILE", help="a profile name from `jit profiles`")
    p.add_argument(
        "--for",
        dest="duration",
        type=parse_duration,
        required=True,
        metavar="DURATION",
        help="how long: 30m, 1h, 1h30m, 1d",
    )
    p.add_argument("--why", required=True, help="the justification approvers and auditors read")
    p.add_argument("--ticket", default="", help="an incident or change ticket, e.g. INC-1234")
    p.add_argument(
        "--start", metavar="TIME", help="start of a scheduled window, ISO 8601 with a time zone (2025-01-31T22:00:00Z)"
    )
    p.add_argument(
        "--public-key", metavar="KEY", help="SSH profiles: your public key (default: the portal makes a key pair)"
    )
    wait = p.add_mutually_exclusive_group()
    wait.add_argument(
        "--wait", dest="wait", action="store_true", default=True, help="wait for the decision and the access (default)"
    )
    wait.add_argument("--no-wait", dest="wait", action="store_false", help="print the request and return at once")
    p.add_argument("--env", action="store_true", help="print the credentials as shell export lines (for eval)")
    p.add_argument(
        "--timeout",
        type=parse_duration,
        default=parse_duration("30m"),
        metavar="DURATION",
        help="give up waiting after this long (default 30m)",
    )
    p.add_argument(
        "--poll", type=float, default=3.0, metavar="SECONDS", help="seconds between checks while waiting (default 3)"
    )
    p.set_defaults(func=cmd_request)

    p = sub.add_parser("status", parents=[common], help="one request in detail, or your latest requests")
    p.add_argument("id", nargs="?", type=_request_id, metavar="ID")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("inbox", parents=[common], help="the requests you may decide now")
    p.set_defaults(func=cmd_inbox)

    for name, text in (("approve", "approve a request (the step you may decide)"), ("deny", "deny a request")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("id", type=_request_id, metavar="ID")
        p.add_argument("--comment", default="", help="why; the requester and auditors read it")
        p.set_defaults(func=cmd_decide)

    p = sub.add_parser("cancel", parents=[common], help="withdraw your pending request")
    p.add_argument("id", type=_request_id, metavar="ID")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("release", parents=[common], help="end your access now")
    p.add_argument("id", type=_request_id, metavar="ID")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("extend", parents=[common], help="ask for more time on your active access")
    p.add_argument("id", type=_request_id, metavar="ID")
    p.add_argument("--for", dest="duration", type=parse_duration, required=True, metavar="DURATION")
    p.add_argument("--why", required=True)
    p.set_defaults(func=cmd_extend)

    p = sub.add_parser("credentials", parents=[common], help="the credentials of your active access, once")
    p.add_argument("id", type=_request_id, metavar="ID")
    p.add_argument("--env", action="store_true", help="as shell export lines")
    p.set_defaults(func=cmd_credentials)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on wrong usage
    try:
        url, token = read_config()
    except ConfigError as exc:
        say(f"jit: {exc}")
        return USAGE
    try:
        return args.func(Client(url, token), args)
    except ApiError as exc:
        where = f" ({OPTIONS.get(exc.field, exc.field)})" if exc.field else ""
        say(f"jit: {exc.message}{where}")
        return REFUSED
    except Refused as exc:
        say(f"jit: {exc}")
        return REFUSED
    except KeyboardInterrupt:
        say("\njit: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

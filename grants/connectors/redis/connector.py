"""Redis connector: one ACL user per grant, with the profile's key patterns, channels and commands.

Redis cannot make a user expire at a given moment: nothing on the server
holds the expiry, so it is the portal's job. Revocation at `expires_at` (and
the sweeper) switches the user off, kills its connections (`CLIENT KILL
USER`), deletes it (`ACL DELUSER`, which also disconnects it) and reads the
server again: `ACL GETUSER` must answer nil and `CLIENT LIST` show no
connection of that user.

Per grant the user `<prefix>g<grant id>` (never user input) gets a random
password that crosses to the server only as its SHA-256 (`#<hex>`), so the
clear password never shows up as a command argument in MONITOR, the slow log
or the ACL file; the user's own AUTH sends it, as any login does.

Target config: `host` and `port` (what users connect to), optional `tls`
(users connect with rediss://) and `prefix` (default "jit_"). The admin URL,
`redis://user:password@host:port/0` (or `rediss://`), comes from the
environment variable named by `target.secret_env`.

Grant scope: `commands` (required: `+@category`, `-@category`, `+command`,
`-command`, `+command|subcommand`), `keys` (`~pattern`: read and write),
`read_keys` (`%R~pattern`), `write_keys` (`%W~pattern`), `channels`
(`&pattern`). `+@all`, `allcommands`, the `admin` and `dangerous` categories,
commands in them (the server's own `COMMAND INFO` says which) and the
commands that administer the server are refused in `validate_scope` and at
provisioning; every user also ends with `-@admin -@dangerous`.

Where the server has an ACL file (`aclfile`), every change is saved to it
(`ACL SAVE`): otherwise a restart would load a revoked user back.

ACL users are per server: they are not replicated, so a replica or another
cluster node is a target of its own.

A connector instance keeps one admin connection and is not thread-safe; use
one instance per task or batch (`with get_connector(target) as c:`).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import shlex
import time
from urllib.parse import quote, urlsplit

import redis
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..base import Connector, ConnectorError, GrantLike, Provisioned

CONNECT_TIMEOUT_S = 5
# A worker must not hang forever on a server that stopped answering.
COMMAND_TIMEOUT_S = 30
# How long revocation waits for killed connections to leave the client list.
KILL_WAIT_S = 5.0

SCOPE_FIELDS = {"commands", "keys", "read_keys", "write_keys", "channels"}
# Key and channel patterns: printable ASCII without spaces (the ACL file is
# split on spaces, so a pattern with one would not load back).
_PATTERN_RE = re.compile(r"[\x21-\x7e]{1,256}")
_RULE_RE = re.compile(r"([+-])(?:@([a-z]+)|([a-z][a-z0-9_-]*)(?:\|([a-z][a-z0-9_-]*))?)")
# Categories no scope may add: they are the server's administration.
_REFUSED_CATEGORIES = {
    "all": "it grants every command, the server's administration included",
    "admin": "it administers the server (ACL, CONFIG, MODULE, SHUTDOWN, REPLICAOF, ...)",
    "dangerous": "it holds commands that administer the server or touch every key (FLUSHALL, KEYS, MIGRATE, ...)",
}
# Commands that administer the server, refused by name whatever categories a
# server puts them in; the subcommands of the ones in _REFUSED_CONTAINERS too.
_REFUSED_COMMANDS = frozenset(
    {
        "acl",
        "bgrewriteaof",
        "bgsave",
        "client",
        "cluster",
        "config",
        "debug",
        "failover",
        "flushall",
        "flushdb",
        "migrate",
        "module",
        "monitor",
        "psync",
        "replconf",
        "replicaof",
        "restore",
        "save",
        "shutdown",
        "slaveof",
        "swapdb",
        "sync",
    }
)
_REFUSED_CONTAINERS = frozenset({"cluster", "config", "debug", "module"})
# Containers among them with subcommands a profile may name instead.
_HARMLESS = {"acl": "whoami", "client": "setname"}
# ACL rules a profile might try that are not command rules, and why each is refused.
_NOT_COMMANDS = {
    "allcommands": "it grants every command (+@all)",
    "nopass": "it lets anyone log in as the user without a password",
    "allkeys": "key patterns go in keys, read_keys or write_keys",
    "allchannels": "channel patterns go in channels",
}
_NO_ACL_FILE = "not configured to use an ACL file"


class RedisConnector(Connector):
    """Provision and revoke per-grant ACL users on a Redis (7.0 or later) or Valkey server."""

    # Nothing on the server holds the expiry: a later one needs no change there.
    extends_in_place = True

    def __init__(self, target):
        super().__init__(target)
        self._client: redis.Redis | None = None
        self._admin_url: str | None = None

    # -- interface ----------------------------------------------------------

    def provision(self, grant: GrantLike) -> Provisioned:
        """Create or reset the grant's ACL user with a fresh password and exactly the scope's rules."""
        name = self.account_name(grant)
        host, port, tls = self._endpoint()
        rules = self._parse_scope(grant.scope)
        password = secrets.token_urlsafe(32)
        digest = hashlib.sha256(password.encode("ascii")).hexdigest()
        with self._errors("provision " + name, hide=(password, digest)):
            # Commands and categories change with the server version: ask it again.
            self._check_rules_on_server(rules)
            # One command, applied whole or not at all: `reset` starts from
            # nothing (no password, no keys, no channels, -@all, off), the
            # scope's rules follow, the administration is taken away last.
            self._run("ACL", "SETUSER", name, "reset", *rules, "-@admin", "-@dangerous", "#" + digest, "on")
            self._save()
        scheme = "rediss" if tls else "redis"
        url_host = f"[{host}]" if ":" in host else host
        url = f"{scheme}://{name}:{quote(password, safe='')}@{url_host}:{port}/0"
        command = ["redis-cli", "-h", host, "-p", port, "--user", name, "--askpass"] + (["--tls"] if tls else [])
        credentials = {
            "username": name,
            "password": password,
            "host": host,
            "port": port,
            "url": url,
            "command": shlex.join(command),
            # redis-cli reads the password from REDISCLI_AUTH.
            "env": f"export REDISCLI_AUTH={shlex.quote(password)}\nexport REDIS_URL={shlex.quote(url)}",
        }
        return Provisioned(external_ref=name, credentials=credentials, expires_at=grant.expires_at)

    def extend(self, grant: GrantLike) -> None:
        """Accept a later expiry: nothing on the server holds it, so only check the user is still there."""
        name = self.account_name(grant)
        with self._errors("extend " + name):
            if not self._user_exists(name):
                raise ConnectorError(
                    f"ACL user {name} does not exist on the target; it cannot be extended.", permanent=True
                )

    def revoke(self, grant: GrantLike) -> None:
        """Switch the grant's user off, kill its connections, delete it and look again; succeed if already gone."""
        name = self.account_name(grant)
        with self._errors("revoke " + name):
            if self._user_exists(name):
                # No new AUTH (off, no password left) while its connections are ended.
                self._run("ACL", "SETUSER", name, "off", "resetpass")
                try:
                    self._run("CLIENT", "KILL", "USER", name)
                except ResponseError as exc:
                    if "no such user" not in str(exc).lower():  # deleted in between
                        raise
                self._run("ACL", "DELUSER", name)
            # Saved even when the user was gone already: an earlier attempt may
            # have deleted it and failed to save, and a restart would load it back.
            self._save()
            left = self._end_connections(name)
            if left:
                raise ConnectorError(f"{left} connection(s) of {name} did not end; will retry.")
            if self._user_exists(name):
                raise ConnectorError(f"ACL user {name} is still there after ACL DELUSER; will retry.")

    def is_present(self, grant: GrantLike) -> bool:
        """Read the server again: does the grant's ACL user, or a connection of it, still exist?"""
        name = self.account_name(grant)
        with self._errors("inspect " + name):
            return self._user_exists(name) or bool(self._connections(name))

    def list_managed(self) -> set[str]:
        """Return the ACL users and connected users that look like ours (prefix + "g" + digits)."""
        with self._errors("list ACL users"):
            names = set(self._run("ACL", "USERS") or [])
            names |= {client.get("user", "") for client in self._client_list()}
        # The reconciler deletes what we return: never a hand-made user such
        # as "jit_gadmin" that merely shares the prefix.
        pattern = re.compile(re.escape(self.prefix + "g") + r"[0-9]+")
        return {name for name in names if pattern.fullmatch(name)}

    def check(self) -> list[str]:
        """Connect, verify the admin user may run what the connector runs; warn about what undermines grants."""
        warnings = []
        with self._errors("check"):
            self._run("PING")
            admin = self._run("ACL", "WHOAMI")
            missing = self._admin_lacks(admin)
            if missing:
                raise ConnectorError(
                    f"Admin user {admin!r} of target {self.target.name!r} may not run {', '.join(missing)}"
                    " (see the README's Redis set-up).",
                    permanent=True,
                )
            default = _as_map(self._run("ACL", "GETUSER", "default"))
            flags = set(default.get("flags") or [])
            if {"on", "nopass"} <= flags:
                warnings.append(
                    "The default user is on and needs no password: every connection that does not AUTH is the"
                    f" default user, with its rights ({default.get('commands', '')}), whatever a grant's user may do."
                    " Give it a password or switch it off (ACL SETUSER default off)."
                )
            warnings += self._persistence_warnings()
            replication = self._info("replication")
            if replication.get("role") in ("slave", "replica"):
                warnings.append(
                    "This server is a replica: ACL users are not replicated, and its primary has its own users."
                )
            elif int(replication.get("connected_slaves", "0") or 0):
                warnings.append(
                    "This server has replicas: ACL users are not replicated, so grant users exist here only;"
                    " a replica serving reads needs a target of its own."
                )
        return warnings

    def validate_scope(self, scope: dict) -> list[str]:
        """Refuse a scope that hands out the server's administration; return warnings about what it lets users leave.

        Checked without the server: the rules' shape, `+@all`, `allcommands`,
        `nopass`, the admin and dangerous categories, the administering
        commands by name. Checked on the server: every command and category
        exists, and no command (or subcommand of it) is in @admin or @dangerous.
        """
        rules = self._parse_scope(scope)
        with self._errors("check the scope"):
            self._check_rules_on_server(rules)
        warnings = []
        commands = [rule for rule in rules if rule[0] in "+-"]
        adds_functions = any(rule in ("+@write", "+@scripting") or rule.startswith("+function") for rule in commands)
        if adds_functions and "-function" not in commands:
            warnings.append(
                "Grant users of this scope may run FUNCTION LOAD, DELETE, FLUSH and RESTORE (through +@write or"
                " +@scripting): functions they load stay after revocation, and FUNCTION FLUSH deletes everyone's."
                " Add -function to the commands unless users are meant to manage functions."
            )
        return warnings

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(RedisError):
                self._client.close()
            self._client = None

    # -- scope ----------------------------------------------------------------

    def _parse_scope(self, scope) -> list[str]:
        """Return the scope as ACL rules (without the user's name), or raise naming what to fix."""
        if not isinstance(scope, dict):
            raise ConnectorError(
                "Grant scope must be a mapping of commands, keys, read_keys, write_keys and channels.", permanent=True
            )
        unknown = sorted(set(scope) - SCOPE_FIELDS)
        if unknown:
            raise ConnectorError(
                f"Grant scope field(s) {', '.join(unknown)} unknown for Redis;"
                f" expected {', '.join(sorted(SCOPE_FIELDS))}.",
                permanent=True,
            )
        rules = []
        for field, sign in (("keys", "~"), ("read_keys", "%R~"), ("write_keys", "%W~"), ("channels", "&")):
            for pattern in self._strings(scope, field):
                if not _PATTERN_RE.fullmatch(pattern):
                    raise ConnectorError(
                        f"Grant scope {field} pattern {pattern!r} must be 1-256 printable ASCII characters"
                        " without spaces.",
                        permanent=True,
                    )
                rules.append(sign + pattern)
        commands = [self._command_rule(rule.strip().lower()) for rule in self._strings(scope, "commands")]
        if not any(rule.startswith("+") for rule in commands):
            raise ConnectorError(
                "Grant scope 'commands' grants no command (+@read, +get, ...): the user could do nothing.",
                permanent=True,
            )
        return rules + commands

    def _strings(self, scope: dict, field: str) -> list[str]:
        value = scope.get(field) or []
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ConnectorError(f"Grant scope '{field}' must be a list of strings.", permanent=True)
        return value

    def _command_rule(self, rule: str) -> str:
        if rule in _NOT_COMMANDS:
            raise ConnectorError(
                f"Grant scope commands rule {rule!r} is refused: {_NOT_COMMANDS[rule]}.", permanent=True
            )
        match = _RULE_RE.fullmatch(rule)
        if not match:
            raise ConnectorError(
                f"Grant scope commands rule {rule!r} must be +@category, -@category, +command, -command or"
                " +command|subcommand (lowercase letters, digits, - and _).",
                permanent=True,
            )
        sign, category, command, sub = match.groups()
        if sign == "+" and category in _REFUSED_CATEGORIES:
            raise ConnectorError(
                f"Grant scope commands rule {rule!r} is refused: {_REFUSED_CATEGORIES[category]}.", permanent=True
            )
        if sign == "+" and command in _REFUSED_CONTAINERS:
            raise ConnectorError(
                f"Grant scope commands rule {rule!r} is refused: {command.upper()} and its subcommands"
                " administer the server.",
                permanent=True,
            )
        if sign == "+" and command in _REFUSED_COMMANDS and sub is None:
            hint = (
                f" (name a harmless subcommand instead, e.g. +{command}|{_HARMLESS[command]})"
                if command in _HARMLESS
                else ""
            )
            raise ConnectorError(
                f"Grant scope commands rule {rule!r} is refused: {command.upper()} administers the server{hint}.",
                permanent=True,
            )
        return rule

    def _check_rules_on_server(self, rules: list[str]) -> None:
        """Refuse unknown categories and commands, and commands the server puts in @admin or @dangerous."""
        categories = set(self._run("ACL", "CAT") or [])
        named = []
        for rule in rules:
            match = _RULE_RE.fullmatch(rule)
            if not match:
                continue  # a key or channel pattern
            _, category, command, sub = match.groups()
            if category is not None:
                if category not in categories:
                    raise ConnectorError(
                        f"Grant scope commands rule {rule!r}: the server has no category {category!r}"
                        f" (it has {', '.join(sorted(categories))}).",
                        permanent=True,
                    )
            else:
                named.append((rule, command if sub is None else f"{command}|{sub}"))
        if not named:
            return
        infos = self._run("COMMAND", "INFO", *[name for _, name in named]) or []
        for (rule, name), info in zip(named, infos):
            if not info:
                raise ConnectorError(
                    f"Grant scope commands rule {rule!r}: the server has no command {name!r}.", permanent=True
                )
            if rule.startswith("-"):
                continue
            # A container (CLIENT, OBJECT, ...) grants every subcommand.
            entries = [info] + [sub for sub in (info[9] if len(info) > 9 and info[9] else [])]
            for entry in entries:
                bad = {str(c).lstrip("@") for c in (entry[6] or [])} & {"admin", "dangerous"}
                if bad:
                    raise ConnectorError(
                        f"Grant scope commands rule {rule!r} is refused: the server puts {entry[0]} in"
                        f" {', '.join('@' + c for c in sorted(bad))}.",
                        permanent=True,
                    )

    # -- the server ---------------------------------------------------------------

    def _user_exists(self, name: str) -> bool:
        return self._run("ACL", "GETUSER", name) is not None

    def _client_list(self) -> list[dict[str, str]]:
        text = self._run("CLIENT", "LIST") or ""
        clients = []
        for line in text.splitlines():
            fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
            if fields:
                clients.append(fields)
        return clients

    def _connections(self, name: str) -> list[str]:
        return [client["id"] for client in self._client_list() if client.get("user") == name and "id" in client]

    def _end_connections(self, name: str) -> int:
        """Kill every connection of `name` still listed and wait for them to leave; return how many are left."""
        deadline = time.monotonic() + KILL_WAIT_S
        while True:
            ids = self._connections(name)
            if not ids or time.monotonic() > deadline:
                return len(ids)
            for client_id in ids:
                # Answers 0 for a connection that ended in between.
                self._run("CLIENT", "KILL", "ID", client_id)
            time.sleep(0.05)

    def _save(self) -> None:
        """Write the ACL file, where the server has one, so that a restart loads what is true now."""
        try:
            self._run("ACL", "SAVE")
        except ResponseError as exc:
            if _NO_ACL_FILE not in str(exc):
                raise

    def _persistence_warnings(self) -> list[str]:
        try:
            self._run("ACL", "SAVE")
        except ResponseError as exc:
            if _NO_ACL_FILE not in str(exc):
                return [
                    f"ACL SAVE fails ({exc}): revocations are not saved, and a restart would load revoked users back."
                ]
            return [
                (
                    "The server has no ACL file (aclfile): grant users live in memory only and vanish at a restart,"
                    " which ends their access early. If users are kept in redis.conf instead, a CONFIG REWRITE while"
                    " a grant is live writes its user there and a restart brings it back after revocation; use an"
                    " aclfile."
                )
            ]
        return []

    def _admin_lacks(self, admin: str) -> list[str]:
        """Return the commands the connector runs that the admin user may not run (ACL DRYRUN, Redis 7+)."""
        probe = self.prefix + "g0"
        needed = [
            ("ACL", "SETUSER", probe),
            ("ACL", "DELUSER", probe),
            ("ACL", "GETUSER", probe),
            ("ACL", "USERS"),
            ("ACL", "CAT"),
            ("ACL", "SAVE"),
            ("CLIENT", "LIST"),
            ("CLIENT", "KILL", "USER", probe),
            ("CLIENT", "KILL", "ID", "1"),
            ("COMMAND", "INFO", "get"),
        ]
        missing = []
        for command in needed:
            try:
                answer = self._run("ACL", "DRYRUN", admin, *command)
            except ResponseError as exc:
                if "unknown subcommand" in str(exc).lower():
                    return []  # before Redis 7: no dry run; errors show at the first provisioning
                raise
            if answer != "OK":
                missing.append(" ".join(command[:2]))
        return missing

    def _info(self, section: str) -> dict[str, str]:
        text = self._run("INFO", section) or ""
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def _run(self, *args):
        return self._connection().execute_command(*args)

    def _connection(self) -> redis.Redis:
        if self._client is None:
            url = self._url()
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                protocol=2,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=COMMAND_TIMEOUT_S,
            )
            # Raw replies, exactly as the server sends them: redis-py's parsers
            # for these commands differ between versions.
            client.response_callbacks.clear()
            self._client = client
        return self._client

    def _url(self) -> str:
        if self._admin_url is None:
            url = self.admin_secret()
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
            except ValueError:
                parts = None
            if parts is None or parts.scheme not in ("redis", "rediss") or not parts.hostname:
                # Not the URL itself in the message: it holds the password.
                raise ConnectorError(
                    f"The admin URL of target {self.target.name!r} is malformed; expected"
                    " redis://user:password@host:port/0 (or rediss://).",
                    permanent=True,
                )
            self._admin_url = url
        return self._admin_url

    def _endpoint(self) -> tuple[str, str, bool]:
        """Return host, port and whether users connect with TLS, from the target config."""
        config = self.target.config
        missing = [key for key in ("host", "port") if not config.get(key)]
        if missing:
            raise ConnectorError(f"Target {self.target.name!r} config lacks {', '.join(missing)}.", permanent=True)
        return str(config["host"]), str(config["port"]), bool(config.get("tls", False))

    @contextlib.contextmanager
    def _errors(self, action: str, *, hide: tuple[str, ...] = ()):
        """Turn client errors into ConnectorError, without the admin password (or `hide`) in the message.

        A server that refused, dropped or did not answer the connection is
        not tried again by this instance (the breaker, `Connector.trip`).
        """
        self.fail_fast()
        try:
            yield
        except ConnectorError:
            raise
        except (AuthenticationError, AuthorizationError) as exc:
            self.close()
            raise ConnectorError(
                f"Cannot {action} on target {self.target.name!r}: {self._scrub(exc, hide)}", permanent=True
            ) from None
        except NoPermissionError as exc:
            raise ConnectorError(
                f"Cannot {action} on target {self.target.name!r}: the admin user may not ({self._scrub(exc, hide)}).",
                permanent=True,
            ) from None
        except ResponseError as exc:
            # The server refused the command as given (a rule it does not know, ...):
            # retrying the same command cannot help.
            raise ConnectorError(
                f"Cannot {action} on target {self.target.name!r}: {self._scrub(exc, hide)}", permanent=True
            ) from None
        except RedisError as exc:
            # Connection refused, reset, timed out: start afresh on the next call,
            # which this instance fails at once (another pass tries the server again).
            self.close()
            error = ConnectorError(
                f"Cannot {action} on target {self.target.name!r}{self._where()}: {self._scrub(exc, hide)}"
            )
            if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
                self.trip(error)
            raise error from None

    def _where(self) -> str:
        try:
            parts = urlsplit(self._admin_url or "")
            return f" ({parts.hostname}:{parts.port or 6379})" if parts.hostname else ""
        except ValueError:
            return ""

    def _scrub(self, exc: Exception, hide: tuple[str, ...] = ()) -> str:
        message = " ".join(str(exc).split()) or type(exc).__name__
        password = ""
        with contextlib.suppress(ValueError):
            password = urlsplit(self._admin_url or "").password or ""
        for secret in (password, *hide):
            if secret:
                message = message.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return message


def _as_map(reply) -> dict:
    """Turn an ACL GETUSER reply (a flat list in RESP2, a map in RESP3) into a dict."""
    if isinstance(reply, dict):
        return reply
    if isinstance(reply, list):
        return dict(zip(reply[0::2], reply[1::2]))
    return {}

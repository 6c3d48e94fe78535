"""The catalog as code: read a YAML file, check it, show what would change, apply it.

Like `terraform plan/apply`: `plan` reads and compares without writing;
`apply` makes the database match in one transaction, idempotently. Every
error names the file, the line and the field, and nothing is applied while
any error remains. Rows the file owns carry `managed_by` = the file's path
and are read-only in the admin.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import zoneinfo
from pathlib import Path
from typing import Any

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils.module_loading import import_string

import audit

from . import events, lifecycle, oncall
from .connectors import REGISTRY, Connector, ConnectorError, get_connector
from .durations import human_duration, parse_duration
from .models import AccessProfile, AccessRequest, Grant, OnCallSchedule, Policy, ReviewSchedule, Target

NAME = re.compile(r"^[a-z0-9][a-z0-9-_]{0,63}$")
TOP = {"targets", "schedules", "policies", "profiles", "reviews"}
SCHEDULE_FIELDS = {"title", "tz", "rotation", "overrides", "ics_url"}
TARGET_FIELDS = {"title", "kind", "config", "secret_env", "description", "notify"}
POLICY_FIELDS = {"title", "steps", "auto_approve", "justification", "request_timeout", "break_glass"}
PROFILE_FIELDS = {
    "title",
    "target",
    "scope",
    "default_duration",
    "max_duration",
    "requestable_by",
    "approvers",
    "policy",
    "risk",
    "description",
    "notify",
    "reviewers",
}
# An access review schedule (grants.models.ReviewSchedule): a campaign at the start of each period.
REVIEW_FIELDS = {"title", "every", "due_in", "undecided", "profiles"}
REVIEW_EVERY = ("month", "quarter", "half-year", "year")
REVIEW_PERIODS = {"month": 28, "quarter": 90, "half-year": 181, "year": 365}  # days: the shortest such period
RULE_FIELDS = {"name", "groups", "max_duration", "business_hours", "ticket_pattern"}
DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class CatalogError(Exception):
    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


# Reading: YAML with line numbers -------------------------------------------


class _RefusedYAML(yaml.YAMLError):
    def __init__(self, message: str, mark):
        super().__init__(message)
        self.message, self.mark = message, mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that remembers each mapping's key lines and refuses duplicate keys, anchors and aliases.

    Aliases let a file of a few hundred bytes stand for billions of values
    ("billion laughs"), which the plan would then expand; a catalog reads
    better with each value written out anyway.
    """

    def compose_node(self, parent, index):
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:  # an alias event's anchor is the name it refers to
            what = f"aliases (*{event.anchor})" if isinstance(event, yaml.AliasEvent) else f"anchors (&{event.anchor})"
            raise _RefusedYAML(f"YAML {what} are not allowed in a catalog file; write the value out", event.start_mark)
        return super().compose_node(parent, index)


def _construct_mapping(loader, node):
    loader.flatten_mapping(node)
    result = _Lines()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    result.line = node.start_mark.line + 1
    return result


class _Lines(dict):
    line = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lines = {}


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclasses.dataclass
class Desired:
    targets: dict[str, dict]
    schedules: dict[str, dict]
    policies: dict[str, dict]
    profiles: dict[str, dict]
    groups: set[str]
    # The line of each profile's scope (or of the profile), for errors found on the target.
    scope_lines: dict[str, int] = dataclasses.field(default_factory=dict)
    reviews: dict[str, dict] = dataclasses.field(default_factory=dict)  # access review schedules


class _Checker:
    def __init__(self, path: str):
        self.path = path
        self.errors: list[str] = []

    def error(self, mapping, key, where: str, message: str):
        line = mapping.lines.get(key, mapping.line) if isinstance(mapping, _Lines) else 0
        self.errors.append(f"{self.path}:{line}: {where}: {message}")

    def mapping(self, parent, key, where) -> _Lines | None:
        value = parent.get(key)
        if value is None:
            return _Lines()
        if not isinstance(value, dict):
            self.error(parent, key, where, "must be a mapping of name: settings")
            return None
        return value

    def fields(self, obj, allowed, where):
        for key in obj:
            if key not in allowed:
                self.error(obj, key, f"{where}.{key}", f"unknown field; expected one of {', '.join(sorted(allowed))}")

    def duration(self, obj, key, where) -> datetime.timedelta | None:
        value = obj.get(key)
        try:
            if not isinstance(value, str):
                raise ValueError
            delta = parse_duration(value)
            if delta <= datetime.timedelta(0):
                raise ValueError
            return delta
        except (ValueError, OverflowError):
            self.error(obj, key, f"{where}.{key}", f"write a positive duration such as 30m, 8h or 1d (got {value!r})")
            return None

    def names(self, obj, key, where) -> list[str]:
        value = obj.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(obj, key, f"{where}.{key}", "must be a list of group names")
            return []
        return value

    def pattern(self, obj, key, where) -> str:
        value = obj.get(key, "")
        try:
            re.compile(value)
        except (re.error, TypeError) as exc:
            self.error(obj, key, f"{where}.{key}", f"not a valid regular expression ({exc})")
        return value


def load(path: str | Path) -> Desired:
    """Read and check a catalog file; raise CatalogError listing every problem."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError([f"{path}: cannot read the file ({exc.strerror})"]) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except _RefusedYAML as exc:
        raise CatalogError([f"{path}:{exc.mark.line + 1}: {exc.message}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise CatalogError([f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    check = _Checker(path)
    if data is None:
        data = _Lines()
    if not isinstance(data, dict):
        raise CatalogError([f"{path}:1: the file must be a mapping with targets, policies and profiles"])
    check.fields(data, TOP, "catalog")
    groups: set[str] = set()

    targets = {}
    for name, spec in (check.mapping(data, "targets", "targets") or {}).items():
        where = f"targets.{name}"
        if not isinstance(spec, dict):
            check.error(data["targets"], name, where, "must be a mapping of settings")
            continue
        if not NAME.match(str(name)):
            check.error(data["targets"], name, where, "names are lowercase letters, digits, - and _")
        check.fields(spec, TARGET_FIELDS, where)
        kind = spec.get("kind")
        if kind not in REGISTRY:
            check.error(spec, "kind", f"{where}.kind", f"unknown kind {kind!r}; one of {', '.join(sorted(REGISTRY))}")
        if not isinstance(spec.get("secret_env"), str) or not re.fullmatch(
            r"[A-Z_][A-Z0-9_]*", spec.get("secret_env", "")
        ):
            check.error(
                spec,
                "secret_env",
                f"{where}.secret_env",
                "name the environment variable that holds the admin secret, e.g. PG_APPDB_ADMIN_DSN",
            )
        config = spec.get("config", {})
        if not isinstance(config, dict):
            check.error(spec, "config", f"{where}.config", "must be a mapping")
            config = {}
        for message in _kind(kind).config_errors(config) if kind in REGISTRY else []:
            check.error(spec, "config", f"{where}.config", message)
        targets[name] = {
            "title": str(spec.get("title", "")),
            "kind": kind,
            "config": dict(config),
            "secret_env": spec.get("secret_env", ""),
            "description": str(spec.get("description", "")),
            "notify": _routes(check, spec, where),
        }

    schedules = {}
    for name, spec in (check.mapping(data, "schedules", "schedules") or {}).items():
        if not isinstance(spec, dict):
            check.error(data["schedules"], name, f"schedules.{name}", "must be a mapping of settings")
            continue
        if not NAME.match(str(name)):
            check.error(data["schedules"], name, f"schedules.{name}", "names are lowercase letters, digits, - and _")
        schedules[name] = _schedule(check, spec, f"schedules.{name}")

    policies = {}
    for name, spec in (check.mapping(data, "policies", "policies") or {}).items():
        where = f"policies.{name}"
        if not isinstance(spec, dict):
            check.error(data["policies"], name, where, "must be a mapping of settings")
            continue
        check.fields(spec, POLICY_FIELDS, where)
        steps = []
        raw_steps = spec.get("steps", [])
        if not isinstance(raw_steps, list):
            check.error(spec, "steps", f"{where}.steps", "must be a list of steps")
            raw_steps = []
        for i, step in enumerate(raw_steps):
            sw = f"{where}.steps[{i + 1}]"
            if not isinstance(step, dict):
                check.error(spec, "steps", sw, "each step is a mapping with group and/or manager, and count")
                continue
            check.fields(
                step, {"group", "manager", "schedule", "count", "remind_after", "escalate_after", "fallback"}, sw
            )
            if not step.get("group") and not step.get("manager") and not step.get("schedule"):
                check.error(step, "group", sw, "name an approver group or an on-call schedule, or set manager: true")
            if (
                step.get("schedule")
                and step["schedule"] not in schedules
                and not OnCallSchedule.objects.filter(name=step["schedule"]).exists()
            ):
                check.error(
                    step,
                    "schedule",
                    f"{sw}.schedule",
                    f"no schedule {step['schedule']!r} in this file (or in the portal)",
                )
            count = step.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                check.error(step, "count", f"{sw}.count", "must be a whole number of at least 1")
                count = 1
            if step.get("group"):
                groups.add(str(step["group"]))
            steps.append(
                {
                    "group": step.get("group"),
                    "manager": bool(step.get("manager")),
                    "count": count,
                    **({"schedule": str(step["schedule"])} if step.get("schedule") else {}),
                    **_escalation(check, step, sw, schedules, groups),
                }
            )
        rules = []
        raw_rules = spec.get("auto_approve", [])
        if not isinstance(raw_rules, list):
            check.error(spec, "auto_approve", f"{where}.auto_approve", "must be a list of rules")
            raw_rules = []
        for i, rule in enumerate(raw_rules):
            rw = f"{where}.auto_approve[{i + 1}]"
            if not isinstance(rule, dict):
                check.error(spec, "auto_approve", rw, "each rule is a mapping")
                continue
            check.fields(rule, RULE_FIELDS, rw)
            out = {"name": str(rule.get("name") or f"rule {i + 1}")}
            if "groups" in rule:
                out["groups"] = check.names(rule, "groups", rw)
                groups.update(out["groups"])
            if "max_duration" in rule:
                d = check.duration(rule, "max_duration", rw)
                out["max_duration"] = int(d.total_seconds()) if d else 0
            if "ticket_pattern" in rule:
                out["ticket_pattern"] = check.pattern(rule, "ticket_pattern", rw)
            if "business_hours" in rule:
                out["business_hours"] = _business_hours(check, rule, rw)
            rules.append(out)
        just = spec.get("justification", {}) or {}
        if not isinstance(just, dict):
            check.error(
                spec,
                "justification",
                f"{where}.justification",
                "must be a mapping with min_length and/or ticket_pattern",
            )
            just = _Lines()
        check.fields(just, {"min_length", "ticket_pattern"}, f"{where}.justification")
        min_length = just.get("min_length", 20)
        if (
            not isinstance(min_length, int)
            or isinstance(min_length, bool)
            or not 1 <= min_length <= lifecycle.MAX_JUSTIFICATION
        ):
            check.error(
                just,
                "min_length",
                f"{where}.justification.min_length",
                f"must be a whole number from 1 to {lifecycle.MAX_JUSTIFICATION}",
            )
            min_length = 20
        timeout = check.duration(spec, "request_timeout", where) if "request_timeout" in spec else None
        glass = spec.get("break_glass", {}) or {}
        if not isinstance(glass, dict):
            check.error(spec, "break_glass", f"{where}.break_glass", "must be a mapping with groups")
            glass = _Lines()
        check.fields(glass, {"groups"}, f"{where}.break_glass")
        glass_groups = check.names(glass, "groups", f"{where}.break_glass") if "groups" in glass else []
        groups.update(glass_groups)
        policies[name] = {
            "title": str(spec.get("title", "")),
            "steps": steps,
            "auto_approve": rules,
            "min_justification": min_length,
            "ticket_pattern": check.pattern(just, "ticket_pattern", f"{where}.justification")
            if "ticket_pattern" in just
            else "",
            "request_timeout": timeout,
            "break_glass_groups": glass_groups,
        }

    profiles, scope_lines = {}, {}
    for name, spec in (check.mapping(data, "profiles", "profiles") or {}).items():
        where = f"profiles.{name}"
        if not isinstance(spec, dict):
            check.error(data["profiles"], name, where, "must be a mapping of settings")
            continue
        if not NAME.match(str(name)):
            check.error(data["profiles"], name, where, "names are lowercase letters, digits, - and _")
        check.fields(spec, PROFILE_FIELDS, where)
        for required in ("title", "target", "max_duration"):
            if required not in spec:
                check.error(spec, None, f"{where}.{required}", "is required")
        target = spec.get("target")
        if (
            target is not None
            and target not in targets
            and not Target.objects.filter(name=target, managed_by="").exists()
        ):
            check.error(
                spec, "target", f"{where}.target", f"no target {target!r} in this file (or unmanaged in the portal)"
            )
        pol = spec.get("policy")
        if pol is not None and pol not in policies:
            check.error(spec, "policy", f"{where}.policy", f"no policy {pol!r} in this file")
        approvers = spec.get("approvers", {}) or {}
        if not isinstance(approvers, dict):
            check.error(spec, "approvers", f"{where}.approvers", "must be a mapping with group and/or manager")
            approvers = _Lines()
        check.fields(approvers, {"group", "manager"}, f"{where}.approvers")
        if pol is None and not approvers.get("group") and not approvers.get("manager"):
            check.error(spec, None, f"{where}.policy", "name a policy, or give approvers: {group: ..., manager: true}")
        if approvers.get("group"):
            groups.add(str(approvers["group"]))
        max_d = check.duration(spec, "max_duration", where) if "max_duration" in spec else None
        default_d = check.duration(spec, "default_duration", where) if "default_duration" in spec else None
        if max_d and default_d and default_d > max_d:
            check.error(
                spec,
                "default_duration",
                f"{where}.default_duration",
                f"is longer than max_duration ({human_duration(max_d)})",
            )
        scope = spec.get("scope", {})
        if not isinstance(scope, dict):
            check.error(spec, "scope", f"{where}.scope", "must be a mapping, e.g. {roles: [app_readonly]}")
            scope = {}
        scope_lines[name] = spec.lines.get("scope", spec.line) if isinstance(spec, _Lines) else 0
        kind = None
        if isinstance(target, str):
            kind = (
                targets[target]["kind"]
                if target in targets
                else Target.objects.filter(name=target).values_list("kind", flat=True).first()
            )
        for message in _kind(kind).scope_errors(scope) if kind in REGISTRY else []:
            check.error(spec, "scope", f"{where}.scope", message)
        requestable = check.names(spec, "requestable_by", where) if "requestable_by" in spec else []
        groups.update(requestable)
        profiles[name] = {
            "title": str(spec.get("title", "")),
            "target": target,
            "scope": dict(scope),
            "default_duration": default_d or min(max_d or datetime.timedelta(hours=1), datetime.timedelta(hours=1)),
            "max_duration": max_d,
            "requestable_by": sorted(requestable),
            "policy": pol,
            "approver_group": approvers.get("group") or None,
            "manager_approves": bool(approvers.get("manager")),
            "risk": str(spec.get("risk", "")),
            "description": str(spec.get("description", "")),
            "notify": _routes(check, spec, where),
            "review_reviewers": _usernames(check, spec, "reviewers", where),
        }
    reviews = {}
    for name, spec in (check.mapping(data, "reviews", "reviews") or {}).items():
        if not isinstance(spec, dict):
            check.error(data["reviews"], name, f"reviews.{name}", "must be a mapping of settings")
            continue
        if not NAME.match(str(name)):
            check.error(data["reviews"], name, f"reviews.{name}", "names are lowercase letters, digits, - and _")
        reviews[name] = _review_schedule(check, spec, f"reviews.{name}", profiles)
    if check.errors:
        raise CatalogError(check.errors)
    return Desired(
        reviews=reviews,
        targets=targets,
        schedules=schedules,
        policies=policies,
        profiles=profiles,
        groups=groups,
        scope_lines=scope_lines,
    )


def _usernames(check: _Checker, spec, key, where) -> list[str]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        check.error(spec, key, f"{where}.{key}", "must be a list of usernames")
        return []
    return sorted(set(value))


def _review_schedule(check: _Checker, spec, where, profiles: dict) -> dict:
    """Check one access review schedule: every (a period), due_in, undecided (keep or remove), profiles."""
    check.fields(spec, REVIEW_FIELDS, where)
    every = spec.get("every")
    if every not in REVIEW_EVERY:
        check.error(spec, "every", f"{where}.every", f"one of {', '.join(REVIEW_EVERY)} (got {every!r})")
    due_in = check.duration(spec, "due_in", where) if "due_in" in spec else datetime.timedelta(days=14)
    if due_in is not None and every in REVIEW_PERIODS:
        if due_in < datetime.timedelta(days=1):
            check.error(spec, "due_in", f"{where}.due_in", "give the reviewers at least a day (e.g. 14d)")
        elif due_in > datetime.timedelta(days=REVIEW_PERIODS[every]):
            check.error(spec, "due_in", f"{where}.due_in", f"must end before the next {every}'s campaign opens")
    undecided = spec.get("undecided", "keep")
    if undecided not in ("keep", "remove"):
        message = f"say what happens to undecided items: keep or remove (got {undecided!r})"
        check.error(spec, "undecided", f"{where}.undecided", message)
    names = spec.get("profiles", [])
    if not isinstance(names, list) or not all(isinstance(v, str) and v for v in names):
        check.error(spec, "profiles", f"{where}.profiles", "must be a list of profile names (leave it out for all)")
        names = []
    for name in names:
        if name not in profiles and not AccessProfile.objects.filter(name=name).exists():
            check.error(spec, "profiles", f"{where}.profiles", f"no profile named {name!r}")
    return {
        "title": str(spec.get("title", "")),
        "every": every,
        "due_in": due_in,
        "undecided": undecided,
        "profiles": sorted(names),
    }


def _review_schedule_row(r: ReviewSchedule) -> dict:
    return {"title": r.title, "every": r.every, "due_in": r.due_in, "undecided": r.undecided, "profiles": r.profiles}


def _schedule(check: _Checker, spec, where) -> dict:
    """Check one on-call schedule: a rotation (with overrides) or an iCalendar feed URL."""
    check.fields(spec, SCHEDULE_FIELDS, where)
    tz_name = str(spec.get("tz", "UTC"))
    try:
        tz = zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        check.error(spec, "tz", f"{where}.tz", f"unknown time zone {tz_name!r} (e.g. Europe/Berlin)")
        tz = datetime.UTC
    out = {
        "title": str(spec.get("title", "")),
        "tz": tz_name,
        "members": [],
        "handover": "09:00",
        "shift_length": datetime.timedelta(days=7),
        "starts_on": None,
        "overrides": [],
        "ics_url": "",
    }
    url = spec.get("ics_url")
    rotation = spec.get("rotation")
    if (url is None) == (rotation is None):
        check.error(spec, None, where, "give either rotation: {members, handover, length, start} or ics_url")
    if url is not None:
        if not isinstance(url, str) or not re.match(r"^https?://[^\s]+$", url):
            check.error(spec, "ics_url", f"{where}.ics_url", f"write an http(s) URL of an iCalendar feed (got {url!r})")
        out["ics_url"] = str(url)
    if rotation is not None:
        rw = f"{where}.rotation"
        if not isinstance(rotation, dict):
            check.error(spec, "rotation", rw, "must be a mapping with members, handover, length and start")
            rotation = _Lines()
        check.fields(rotation, {"members", "handover", "length", "start"}, rw)
        members = rotation.get("members")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) and m for m in members):
            check.error(rotation, "members", f"{rw}.members", "must be a list of usernames, in rotation order")
        else:
            out["members"] = members
        handover = str(rotation.get("handover", "09:00"))
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", handover):
            check.error(rotation, "handover", f"{rw}.handover", f"write a local time like 09:00 (got {handover!r})")
        else:
            out["handover"] = handover
        if "length" in rotation:
            out["shift_length"] = check.duration(rotation, "length", rw) or out["shift_length"]
        try:
            out["starts_on"] = datetime.date.fromisoformat(str(rotation.get("start", "")))
        except ValueError:
            check.error(rotation, "start", f"{rw}.start", "write the first shift's date, e.g. 2026-01-05")
    overrides = spec.get("overrides", [])
    if not isinstance(overrides, list):
        check.error(spec, "overrides", f"{where}.overrides", "must be a list of {user, start, end}")
        overrides = []
    for i, override in enumerate(overrides):
        ow = f"{where}.overrides[{i + 1}]"
        if not isinstance(override, dict):
            check.error(spec, "overrides", ow, "each override is a mapping with user, start and end")
            continue
        check.fields(override, {"user", "start", "end"}, ow)
        try:
            start, end = (oncall.parse_time(override.get(k, ""), tz) for k in ("start", "end"))
        except (ValueError, TypeError):
            check.error(override, "start", ow, "write start and end as ISO times, e.g. 2026-12-24T18:00 (local to tz)")
            continue
        if end <= start:
            check.error(override, "end", f"{ow}.end", "must be after start")
        if not isinstance(override.get("user"), str) or not override["user"]:
            check.error(override, "user", f"{ow}.user", "name the person on call (a username)")
            continue
        out["overrides"].append({"user": override["user"], "start": start.isoformat(), "end": end.isoformat()})
    return out


def _escalation(check: _Checker, step, where, schedules: dict, groups: set[str]) -> dict:
    """Check a step's reminder and escalation: remind_after, escalate_after and fallback ({group} or {schedule})."""
    out = {}
    for key in ("remind_after", "escalate_after"):
        if key in step:
            delta = check.duration(step, key, where)
            out[key] = int(delta.total_seconds()) if delta else 0
    fallback = step.get("fallback")
    if fallback is not None:
        fw = f"{where}.fallback"
        if not isinstance(fallback, dict) or len(fallback) != 1 or not isinstance(next(iter(fallback.values())), str):
            check.error(step, "fallback", fw, "write {group: G} or {schedule: S}")
        else:
            check.fields(fallback, {"group", "schedule"}, fw)
            if (
                fallback.get("schedule")
                and fallback["schedule"] not in schedules
                and not OnCallSchedule.objects.filter(name=fallback["schedule"]).exists()
            ):
                check.error(
                    fallback,
                    "schedule",
                    f"{fw}.schedule",
                    f"no schedule {fallback['schedule']!r} in this file (or in the portal)",
                )
            if fallback.get("group"):
                groups.add(fallback["group"])
            out["fallback"] = dict(fallback)
    if "escalate_after" in step and fallback is None:
        check.error(
            step,
            "escalate_after",
            f"{where}.escalate_after",
            "name the fallback to escalate to: fallback: {group: G} or {schedule: S}",
        )
    if fallback is not None and "escalate_after" not in step:
        check.error(step, "fallback", f"{where}.fallback", "say when to escalate: escalate_after: 1h")
    if out.get("remind_after") and out.get("escalate_after") and out["remind_after"] >= out["escalate_after"]:
        check.error(step, "remind_after", f"{where}.remind_after", "must be shorter than escalate_after")
    return out


def _routes(check: _Checker, spec, where) -> dict:
    """Check `notify`: per channel kind (as `events.add_route_kind` registered them) one address or a list of them."""
    kinds = events.route_kinds()
    routes = spec.get("notify", {}) or {}
    nw = f"{where}.notify"
    if not isinstance(routes, dict):
        check.error(spec, "notify", nw, f"must be a mapping of {', '.join(sorted(kinds))} to addresses")
        return {}
    check.fields(routes, set(kinds), nw)
    out = {}
    for kind, value in routes.items():
        if kind not in kinds:
            continue
        addresses = [value] if isinstance(value, str) else value
        if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) and a for a in addresses):
            check.error(routes, kind, f"{nw}.{kind}", "one address or a list of them")
            continue
        for address in addresses:
            problem = kinds[kind](address)
            if problem:
                check.error(routes, kind, f"{nw}.{kind}", problem)
        out[kind] = addresses
    return out


def _kind(kind: str) -> type[Connector]:
    return import_string(REGISTRY[kind])


def _business_hours(check: _Checker, rule, where) -> dict:
    spec = rule.get("business_hours")
    bw = f"{where}.business_hours"
    if not isinstance(spec, dict):
        check.error(rule, "business_hours", bw, "must be a mapping with tz, days, start, end")
        return {}
    check.fields(spec, {"tz", "days", "start", "end"}, bw)
    out = {"tz": str(spec.get("tz", "UTC"))}
    try:
        zoneinfo.ZoneInfo(out["tz"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        check.error(spec, "tz", f"{bw}.tz", f"unknown time zone {out['tz']!r} (e.g. Europe/Berlin)")
    days = spec.get("days", "mon-fri")
    try:
        out["days"] = _days(days)
    except ValueError:
        check.error(spec, "days", f"{bw}.days", f"write days like mon-fri or [mon, wed] (got {days!r})")
    for key, default in (("start", "09:00"), ("end", "17:00")):
        value = str(spec.get(key, default))
        try:
            datetime.time.fromisoformat(value)
            out[key] = value
        except ValueError:
            check.error(spec, key, f"{bw}.{key}", f"write a time like 09:00 (got {value!r})")
    if out.get("start", "0") >= out.get("end", "1"):
        check.error(spec, "end", f"{bw}.end", "must be after start")
    return out


def _days(value) -> list[int]:
    if isinstance(value, str) and "-" in value:
        first, last = (DAY_NAMES.index(v.strip().lower()[:3]) for v in value.split("-", 1))
        return list(range(first, last + 1))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(value)
    return sorted({DAY_NAMES.index(str(v).strip().lower()[:3]) for v in value})


# Comparing ------------------------------------------------------------------


@dataclasses.dataclass
class Change:
    kind: str  # target | schedule | policy | profile | group
    name: str
    action: str  # add | change | disable | remove
    fields: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Plan:
    path: str
    changes: list[Change]
    people: list[str]  # "profile x: may request: +ana -bob"
    warnings: list[str] = dataclasses.field(default_factory=list)  # what could not be checked on a target
    on_call: list[str] = dataclasses.field(default_factory=list)  # "schedule primary: otto (why)", as of now

    @property
    def empty(self) -> bool:
        return not self.changes

    def render(self) -> str:
        warnings = [f"warning: {w}" for w in self.warnings]
        if self.on_call:
            warnings = ["On call now:", *[f"  {line}" for line in self.on_call], *warnings]
        if self.empty:
            return "\n".join([f"{self.path}: no changes; the portal already matches the file.", *warnings])
        lines = [f"{self.path}: {len(self.changes)} change(s)"]
        sign = {"add": "+", "change": "~", "disable": "-", "remove": "-"}
        for c in self.changes:
            lines.append(f"  {sign[c.action]} {c.kind} {c.name}: {c.action}")
            for field, (old, new) in c.fields.items():
                lines.append(f"      {field}: {_show(old)} -> {_show(new)}")
        if self.people:
            lines.append("Effect on people:")
            lines += [f"  {p}" for p in self.people]
        return "\n".join(lines + warnings)


def _show(value):
    if isinstance(value, datetime.timedelta):
        return human_duration(value)
    if value in (None, "", [], {}):
        return "(none)"
    return value if isinstance(value, str) else repr(value)


def _schedule_row(s: OnCallSchedule) -> dict:
    return {
        "title": s.title,
        "tz": s.tz,
        "members": s.members,
        "handover": s.handover,
        "shift_length": s.shift_length,
        "starts_on": s.starts_on,
        "overrides": s.overrides,
        "ics_url": s.ics_url,
    }


def _on_call_now(desired: Desired) -> list[str]:
    """Return who each schedule of the file has on call now, and why (an applied feed's copy is reused)."""
    lines = []
    rows = {s.name: s for s in OnCallSchedule.objects.filter(name__in=desired.schedules)}
    for name, wanted in sorted(desired.schedules.items()):
        row = rows.get(name)
        if row is None or _schedule_row(row) != wanted:
            row = OnCallSchedule(name=name, **wanted)
        found = oncall.on_call(row)
        lines.append(f"schedule {name}: {found.user.username if found.user else 'nobody'} ({found.why})")
    return lines


def _target_row(t: Target) -> dict:
    return {
        "title": t.title,
        "kind": t.kind,
        "config": t.config,
        "secret_env": t.secret_env,
        "description": t.description,
        "notify": t.notify,
    }


def _policy_row(p: Policy) -> dict:
    return {
        "title": p.title,
        "steps": p.steps,
        "auto_approve": p.auto_approve,
        "min_justification": p.min_justification,
        "ticket_pattern": p.ticket_pattern,
        "request_timeout": p.request_timeout,
        "break_glass_groups": p.break_glass_groups,
    }


def _profile_row(p: AccessProfile) -> dict:
    return {
        "title": p.title,
        "target": p.target.name,
        "scope": p.scope,
        "default_duration": p.default_duration,
        "max_duration": p.max_duration,
        "requestable_by": sorted(g.name for g in p.requestable_by.all()),
        "policy": p.policy.name if p.policy_id else None,
        "approver_group": p.approver_group.name if p.approver_group_id else None,
        "manager_approves": p.manager_approves,
        "risk": p.risk,
        "description": p.description,
        "notify": p.notify,
        "review_reviewers": p.review_reviewers,
    }


def _diff(kind, name, current: dict | None, wanted: dict) -> Change | None:
    if current is None:
        return Change(
            kind, name, "add", {k: (None, v) for k, v in wanted.items() if v not in (None, "", [], {}, False)}
        )
    fields = {k: (current.get(k), v) for k, v in wanted.items() if current.get(k) != v}
    return Change(kind, name, "change", fields) if fields else None


def _people(profile: dict | None) -> tuple[set[str] | None, set[str]]:
    """Return (who may request: None means everyone, who may approve) for a desired or current profile row."""
    if profile is None:
        return set(), set()
    User = get_user_model()
    active = User.objects.filter(is_active=True)
    requesters = None
    if profile["requestable_by"]:
        requesters = set(active.filter(groups__name__in=profile["requestable_by"]).values_list("username", flat=True))
    approver_groups = [profile["approver_group"]] if profile.get("approver_group") else []
    approver_groups += profile.get("_step_groups", [])
    approvers = (
        set(active.filter(groups__name__in=approver_groups).values_list("username", flat=True))
        if approver_groups
        else set()
    )
    if profile.get("manager_approves") or profile.get("_managers"):
        approvers.add("(the requester's manager)")
    approvers.update(f"(on call for {name})" for name in profile.get("_schedules", []))
    return requesters, approvers


def _with_steps(row: dict | None, policies: dict) -> dict | None:
    if row is None:
        return None
    pol = policies.get(row.get("policy")) if row.get("policy") else None
    steps = pol["steps"] if pol else []
    return {
        **row,
        "_step_groups": [s["group"] for s in steps if s.get("group")],
        "_managers": any(s.get("manager") for s in steps),
        "_schedules": [s["schedule"] for s in steps if s.get("schedule")],
    }


def _people_lines(name: str, before: dict | None, after: dict | None) -> list[str]:
    lines = []
    (req_b, app_b), (req_a, app_a) = _people(before), _people(after)
    for label, old, new in (("may request", req_b, req_a), ("may approve", app_b, app_a)):
        if old == new:
            continue
        if old is None or new is None:
            lines.append(
                f"profile {name}: {label}: {'everyone' if old is None else ', '.join(sorted(old)) or 'nobody'}"
                f" -> {'everyone' if new is None else ', '.join(sorted(new)) or 'nobody'}"
            )
            continue
        gained, lost = sorted(new - old), sorted(old - new)
        parts = [f"+{u}" for u in gained] + [f"-{u}" for u in lost]
        lines.append(f"profile {name}: {label}: {' '.join(parts)}")
    return lines


def plan(path: str | Path, desired: Desired | None = None) -> Plan:
    """Compare the file with the database; write nothing."""
    path = str(path)
    desired = desired or load(path)
    changes: list[Change] = []
    existing_groups = set(Group.objects.values_list("name", flat=True))
    for g in sorted(desired.groups - existing_groups):
        changes.append(Change("group", g, "add"))

    current_targets = {t.name: t for t in Target.objects.all()}
    for name, wanted in desired.targets.items():
        row = current_targets.get(name)
        change = _diff("target", name, _target_row(row) if row else None, wanted)
        if change:
            changes.append(change)
    current_schedules = {s.name: s for s in OnCallSchedule.objects.all()}
    for name, wanted in desired.schedules.items():
        row = current_schedules.get(name)
        change = _diff("schedule", name, _schedule_row(row) if row else None, wanted)
        if change:
            changes.append(change)
    for name, row in current_schedules.items():
        if row.managed_by == path and name not in desired.schedules:
            changes.append(Change("schedule", name, "remove", {"row": ("managed", "kept, no longer managed")}))
    current_policies = {p.name: p for p in Policy.objects.all()}
    for name, wanted in desired.policies.items():
        row = current_policies.get(name)
        change = _diff("policy", name, _policy_row(row) if row else None, wanted)
        if change:
            changes.append(change)
    for name, row in current_policies.items():
        if row.managed_by == path and name not in desired.policies:
            changes.append(
                Change("policy", name, "remove", {"row": ("kept while a profile refers to it", "no longer managed")})
            )

    current_profiles = {
        p.name: p
        for p in AccessProfile.objects.select_related("target", "policy", "approver_group").prefetch_related(
            "requestable_by"
        )
    }
    policy_rows = {n: _policy_row(p) for n, p in current_policies.items()}
    people, moved = [], []
    for name, wanted in desired.profiles.items():
        row = current_profiles.get(name)
        before = _profile_row(row) if row else None
        if before and before["target"] != wanted["target"]:
            moved += _target_move_errors(path, desired, row, wanted["target"])
        compare = {**wanted, "enabled": True}
        change = _diff("profile", name, {**before, "enabled": row.enabled} if row else None, compare)
        if change:
            changes.append(change)
        was = _with_steps(before, policy_rows) if row and row.enabled else None
        people += _people_lines(name, was, _with_steps(wanted, desired.policies))
    for name, row in current_profiles.items():
        if row.managed_by == path and name not in desired.profiles and row.enabled:
            live = Grant.objects.filter(profile=row, status__in=[Grant.Status.SCHEDULED, Grant.Status.ACTIVE]).count()
            pending = AccessRequest.objects.filter(profile=row, status=AccessRequest.Status.PENDING).count()
            fields = {
                "live grants": (live, "kept to expiry unless --revoke-removed"),
                "pending requests": (pending, "cancelled"),
            }
            changes.append(Change("profile", name, "disable", fields))
            people += _people_lines(name, _with_steps(_profile_row(row), policy_rows), None)
    for name, row in current_targets.items():
        if row.managed_by == path and name not in desired.targets:
            changes.append(
                Change(
                    "target", name, "disable", {"profiles": ("enabled", "disabled; the row is kept, no longer managed")}
                )
            )
    current_reviews = {r.name: r for r in ReviewSchedule.objects.all()}
    for name, wanted in desired.reviews.items():
        row = current_reviews.get(name)
        change = _diff("review schedule", name, _review_schedule_row(row) if row else None, wanted)
        if change:
            changes.append(change)
    for name, row in current_reviews.items():
        if row.managed_by == path and name not in desired.reviews:
            gone = {"row": ("opens campaigns", "removed; its campaigns are kept")}
            changes.append(Change("review schedule", name, "remove", gone))
    if moved:
        raise CatalogError(moved)
    warnings = _check_scopes_on_targets(path, desired, current_targets)
    named = {u for p in desired.profiles.values() for u in p["review_reviewers"]}
    active = set(get_user_model().objects.filter(username__in=named, is_active=True).values_list("username", flat=True))
    for name, wanted in sorted(desired.profiles.items()):
        missing = [u for u in wanted["review_reviewers"] if u not in active]
        if missing:
            warnings.append(
                f"profile {name}: reviewers {', '.join(missing)} are no active portal users (yet); "
                "its access reviews fall to its approvers until they are"
            )
    return Plan(path, changes, people, warnings, on_call=_on_call_now(desired))


def _target_move_errors(path: str, desired: Desired, row: AccessProfile, new_target: str) -> list[str]:
    """Refuse to move a profile to another target while something of it lives on the old one.

    Requests freeze their target when submitted, and revocation talks to the
    target a grant was made on: moving the profile under them would send
    revocations to a server that never saw the account.
    """
    live = Grant.objects.filter(
        profile=row, status__in=[Grant.Status.SCHEDULED, Grant.Status.ACTIVE, Grant.Status.REVOKING]
    ).count()
    pending = AccessRequest.objects.filter(profile=row, status=AccessRequest.Status.PENDING).count()
    if not live and not pending:
        return []
    line = desired.scope_lines.get(row.name, 0)
    return [
        f"{path}:{line}: profiles.{row.name}.target: cannot move from {row.target.name} to {new_target} while it has "
        f"{live} live grant(s) and {pending} pending request(s) there; let them end (or revoke them), or add a new "
        "profile for the new target"
    ]


def _check_scopes_on_targets(path: str, desired: Desired, current_targets: dict[str, Target]) -> list[str]:
    """Ask each profile's target whether its scope is acceptable (no superuser or admin roles); return warnings.

    A scope the target refuses is an error (raised, like the file's own
    errors). A target this machine cannot read (no admin secret here, not
    reachable) is a warning: provisioning checks the scope again anyway.
    """
    errors, warnings = [], []
    by_target: dict[str, list[str]] = {}
    for name, profile in desired.profiles.items():
        by_target.setdefault(profile["target"], []).append(name)
    for target_name, names in by_target.items():
        spec = desired.targets.get(target_name)
        target = Target(name=target_name, **spec) if spec else current_targets.get(target_name)
        if target is None or target.kind not in REGISTRY:
            continue
        unread = f"target {target_name}: scopes not checked on the target ({{}}); provisioning checks them."
        with get_connector(target) as connector:
            if type(connector).validate_scope is Connector.validate_scope:
                continue  # this kind has nothing to check on the target
            try:
                connector.admin_secret()
            except ConnectorError as exc:
                warnings.append(unread.format(exc.message))
                continue
            for name in names:
                try:
                    found = connector.validate_scope(desired.profiles[name]["scope"]) or []
                    warnings.extend(f"profiles.{name}.scope: {warning}" for warning in found)
                except ConnectorError as exc:
                    if not exc.permanent:
                        warnings.append(unread.format(exc.message))
                        break
                    errors.append(f"{path}:{desired.scope_lines.get(name, 0)}: profiles.{name}.scope: {exc.message}")
    if errors:
        raise CatalogError(errors)
    return warnings


# Applying -------------------------------------------------------------------


def apply(path: str | Path, *, revoke_removed: bool = False, actor=None) -> tuple[Plan, list[int]]:
    """Make the database match the file in one transaction; return the plan applied and grants revoked."""
    path = str(path)
    desired = load(path)
    revoked: list[int] = []
    cancelled: list[int] = []
    with transaction.atomic():
        the_plan = plan(path, desired)
        if the_plan.empty:
            return the_plan, revoked
        groups = {g: Group.objects.get_or_create(name=g)[0] for g in desired.groups}
        targets = {}
        for name, wanted in desired.targets.items():
            targets[name], _ = Target.objects.update_or_create(name=name, defaults={**wanted, "managed_by": path})
        for name, wanted in desired.schedules.items():
            row = OnCallSchedule.objects.filter(name=name).first()
            # Another feed: the copy of the old one says nothing about it.
            forget = (
                {"ics_text": "", "ics_fetched_at": None, "ics_error": ""}
                if row and row.ics_url != wanted["ics_url"]
                else {}
            )
            OnCallSchedule.objects.update_or_create(name=name, defaults={**wanted, **forget, "managed_by": path})
        OnCallSchedule.objects.filter(managed_by=path).exclude(name__in=desired.schedules).update(managed_by="")
        policies = {}
        for name, wanted in desired.policies.items():
            policies[name], _ = Policy.objects.update_or_create(name=name, defaults={**wanted, "managed_by": path})
        for name, wanted in desired.profiles.items():
            target = targets.get(wanted["target"]) or Target.objects.get(name=wanted["target"])
            fields = {
                k: v for k, v in wanted.items() if k not in ("target", "policy", "requestable_by", "approver_group")
            }
            profile, _ = AccessProfile.objects.update_or_create(
                name=name,
                defaults={
                    **fields,
                    "target": target,
                    "policy": policies.get(wanted["policy"]),
                    "approver_group": groups.get(wanted["approver_group"]),
                    "enabled": True,
                    "managed_by": path,
                },
            )
            profile.requestable_by.set([groups[g] for g in wanted["requestable_by"]])
        gone_profiles = AccessProfile.objects.filter(managed_by=path, enabled=True).exclude(name__in=desired.profiles)
        gone_targets = Target.objects.filter(managed_by=path).exclude(name__in=desired.targets)
        disabled = list(gone_profiles) + list(AccessProfile.objects.filter(target__in=gone_targets, enabled=True))
        if revoke_removed:
            # Grant rows before the audit chain (the cancellations below append), as everywhere:
            # a worker holding a grant while it talks to the target appends after.
            live = Grant.objects.filter(profile__in=disabled, status__in=[Grant.Status.SCHEDULED, Grant.Status.ACTIVE])
            list(live.select_for_update(of=("self",)).order_by("pk").values_list("pk", flat=True))
        for profile in disabled:
            profile.enabled = False
            profile.save(update_fields=["enabled"])
            cancelled += lifecycle.cancel_requests_of_disabled_profile(profile)
            if revoke_removed:
                for grant_id in Grant.objects.filter(
                    profile=profile, status__in=[Grant.Status.SCHEDULED, Grant.Status.ACTIVE]
                ).values_list("pk", flat=True):
                    lifecycle.revoke_grant(grant_id, actor=None, reason=Grant.EndReason.POLICY)
                    revoked.append(grant_id)
        for name, wanted in desired.reviews.items():
            ReviewSchedule.objects.update_or_create(name=name, defaults={**wanted, "managed_by": path})
        ReviewSchedule.objects.filter(managed_by=path).exclude(name__in=desired.reviews).delete()
        gone_policies = Policy.objects.filter(managed_by=path).exclude(name__in=desired.policies)
        gone_policies.filter(profiles__isnull=True).delete()
        # Kept for the history of the profiles that used them, and handed
        # back to the admin, so the next plan does not list them again.
        gone_policies.update(managed_by="")
        gone_targets.update(managed_by="")
        audit.record(
            "catalog.applied",
            actor=actor,
            details={
                "file": path,
                "changes": [f"{c.action} {c.kind} {c.name}" for c in the_plan.changes],
                "people": the_plan.people,
                "revoked": revoked,
                "cancelled": cancelled,
            },
        )
    return the_plan, revoked

"""Announce what happened in the core, after its transaction commits; the edges subscribe.

The core says what happened and with which ids (`announce("approval_needed",
request_id=7)`); it never says who should hear of it or how. An edge
subscribes to the events it cares about in its AppConfig.ready(), and its
handler runs after commit, so it never sees a change that was rolled back.
A handler should be quick (enqueue a task with the ids); one that fails is
logged and stops neither the other handlers nor the core's own work after
commit (provisioning, revocation).

Edges may also tell the core which channel kinds a profile's or target's
`notify` may name (`add_route_kind`), so the catalog can check addresses
without naming any edge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

log = logging.getLogger(__name__)

# Every event the core announces, and the facts (keyword arguments) that come with it.
EVENTS = {
    "approval_needed": ("request_id",),  # a request (or its next step) waits for approvers
    "approval_reminder": ("request_id",),  # nobody decided a step for its remind_after
    "approval_escalated": ("request_id",),  # nobody decided a step in time: it escalated to its fallback
    "request_decided": ("request_id",),  # approved or denied, by a person or the policy
    "break_glass_used": ("request_id",),  # access taken without approval
    "grant_provisioned": ("grant_id",),  # the access is ready
    "expiry_soon": ("grant_id",),  # the access ends in a few minutes
    "grants_revoked": ("grant_ids",),  # a revocation batch confirmed gone on the target
    "drift_found": ("finding_ids",),  # access on a target that no grant explains
    "access_review_opened": ("review_id",),  # a campaign opened: its reviewers have items to decide
    "access_review_reminder": ("review_id",),  # a campaign's due date is near and items are undecided
    "eligibility_removed": ("removal_id",),  # a review removed someone: the IdP group managers should follow
    "eligibility_reinstated": ("removal_id",),  # a removal was lifted: the person and the IdP group managers
}

_handlers: dict[str, list[Callable]] = {event: [] for event in EVENTS}

# Channel kind -> what is wrong with an address of that kind (None when good), as edges register them.
_route_kinds: dict[str, Callable[[str], str | None]] = {}


def subscribe(event: str, handler: Callable) -> None:
    """Call `handler(**facts)` after commit each time `event` is announced (once, however often subscribed)."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; the core announces {', '.join(sorted(EVENTS))}")
    if handler not in _handlers[event]:
        _handlers[event].append(handler)


def announce(event: str, **facts) -> None:
    """Tell the subscribers of `event` what happened, once the current transaction commits (at once outside one)."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    if set(facts) != set(EVENTS[event]):
        raise TypeError(f"{event} takes {', '.join(EVENTS[event])}, not {', '.join(sorted(facts)) or 'nothing'}")
    transaction.on_commit(lambda: _dispatch(event, facts))


def _dispatch(event: str, facts: dict) -> None:
    for handler in list(_handlers[event]):
        try:
            handler(**facts)
        except Exception:
            log.exception("A handler of %s failed (%r)", event, facts)


def add_route_kind(kind: str, address_error: Callable[[str], str | None]) -> None:
    """Let a profile's or target's `notify` name `kind`, with the check of its addresses."""
    _route_kinds[kind] = address_error


def route_kinds() -> dict[str, Callable[[str], str | None]]:
    """Return the channel kinds `notify` may name, each with its address check."""
    return dict(_route_kinds)

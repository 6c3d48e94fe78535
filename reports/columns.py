"""Each report's CSV columns, defined here and nowhere else.

The README's "For auditors" section documents them. Headers are stable: add
columns at the end, never rename or reorder.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Column:
    header: str  # the stable CSV header
    field: str  # the name on the selector's rows: a field, a lookup or an annotation
    doc: str  # what it holds, for people reading the file


ACCESS_HISTORY = (
    Column("grant_id", "pk", "Grant number."),
    Column("request_id", "request_id", "Number of the request that made the grant."),
    Column("user", "user__username", "Who the access was for (username)."),
    Column("user_email", "user__email", "Their email address."),
    Column("target", "profile__target__name", "Target (catalog name)."),
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column("requested_at", "requested_at", "When the request was made."),
    Column("decision", "decision", "`approved` (by a person), `auto_approved` (a policy rule) or `break_glass`."),
    Column(
        "decided_by",
        "request__decided_by__username",
        "Who gave the last approval; empty when a rule or break-glass approved.",
    ),
    Column(
        "auto_rule",
        "request__auto_rule",
        "The policy rule that approved it (`break-glass` for break-glass), else empty.",
    ),
    Column("decided_at", "decided_at", "When it was approved."),
    Column("justification", "request__justification", "The requester's justification."),
    Column("ticket", "request__ticket", "Ticket reference, if given."),
    Column("started_at", "starts_at", "When the access was provisioned; empty if it never was."),
    Column("expires_at", "expires_at", "When it was due to expire."),
    Column(
        "ended_at",
        "ended_at",
        "When a fresh read of the target confirmed it gone (`verified_at`, else `revoked_at`); empty while it "
        "may still exist.",
    ),
    Column(
        "duration_seconds", "actual_duration", "Seconds from `started_at` to `ended_at`; empty until both are known."
    ),
    Column("status", "status", "Grant status: `scheduled`, `active`, `revoking`, `revoked` or `failed`."),
    Column(
        "end_reason", "end_reason", "`expired`, `released`, `revoked` (by an admin) or `policy`; empty while it lives."
    ),
    Column("ended_by", "ended_by__username", "Who released or revoked it; empty for expiry and policy."),
    Column(
        "activity",
        "activity_summary",
        "What the target kept of its use, in one line (`12 statements, 340 calls`, `3 sessions`, `unavailable: why`);"
        " empty where nothing was read or reported. The grant's activity CSV has the rows.",
    ),
)

# One grant's activity (`/audit/grants/<id>/activity.csv`): what its target kept, row by row.
GRANT_ACTIVITY = (
    Column("grant_id", "grant_id", "Grant number."),
    Column(
        "source_of_record",
        "source_of_record",
        "Where it was read: `pg_stat_statements`, `performance_schema`, `ssh session guard`.",
    ),  # fmt: skip
    Column(
        "kind", "kind", "`statement` (or `statement kind`), `open at revocation`, `session`, `totals` or `unavailable`."
    ),  # fmt: skip
    Column("database", "database", "The database a statement ran in, or a session was connected to."),
    Column("statement", "statement", "The normalised statement (constants as $1), or the statement kind."),
    Column("calls", "calls", "How many times it ran."),
    Column("rows", "rows", "Rows it returned or changed, in all."),
    Column("total_ms", "total_ms", "Milliseconds it ran, in all."),
    Column("host", "host", "The SSH host that reported the session."),
    Column("started_at", "started_at", "When the session started."),
    Column("ended_at", "ended_at", "When the session ended; empty if its end was never reported."),
    Column("source", "source", "The client's address (and port, for SSH)."),
    Column("exit_status", "exit_status", "The session's exit status."),
    Column("recording_sha256", "recording_sha256", "SHA-256 of the session recording the host keeps, if any."),
    Column("note", "note", "Why it is unavailable, or what ended the session (`expired`, `revoked`)."),
)

CURRENT_ACCESS = (
    Column("grant_id", "pk", "Grant number."),
    Column("request_id", "request_id", "Number of the request that made the grant."),
    Column("user", "user__username", "Who holds it (username)."),
    Column("user_email", "user__email", "Their email address."),
    Column("target", "profile__target__name", "Target (catalog name)."),
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column(
        "state",
        "state",
        "`active`, `past_expiry` (expired, removal under way) or `ending` (released or revoked, removal under way).",
    ),
    Column("started_at", "starts_at", "When it was provisioned."),
    Column("expires_at", "expires_at", "When it expires."),
    Column("time_left_seconds", "remaining", "Seconds left at the time of the download (0 unless `active`)."),
    Column("break_glass", "break_glass", "`true` if granted through break-glass."),
    Column("external_ref", "external_ref", "The account on the target, e.g. `jit_g42`."),
    Column("end_reason", "end_reason", "Why it is ending, when `ending` or `past_expiry`."),
)

DECISIONS = (
    Column("request_id", "pk", "Request number."),
    Column("requested_at", "created_at", "When the request was made."),
    Column("requester", "requester__username", "Who asked (username)."),
    Column("target", "profile__target__name", "Target (catalog name)."),
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column("requested_duration_seconds", "duration", "How long was asked for, in seconds."),
    Column("decision", "decision", "`approved`, `auto_approved`, `break_glass`, `denied`, `lapsed` or `cancelled`."),
    Column(
        "decided_by",
        "decided_by__username",
        "Who gave the last approval or denied; empty for rules, lapses and cancellations.",
    ),
    Column("auto_rule", "auto_rule", "The policy rule that approved it, if any."),
    Column("decided_at", "decided_at", "When it was decided (or lapsed, or was cancelled)."),
    Column("time_to_decision_seconds", "time_to_decision", "Seconds from `requested_at` to `decided_at`."),
    Column("comment", "decision_comment", "The decider's comment."),
    Column("ticket", "ticket", "Ticket reference, if given."),
    Column("extends_grant_id", "extends_id", "For a request for more time: the grant it extends."),
)

DECISIONS_BY_PROFILE = (
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column("profile_title", "profile__title", "Its title."),
    Column("target", "profile__target__name", "Target (catalog name)."),
    Column("decided", "decided", "Requests approved (by anyone or anything) or denied."),
    Column("approved", "approved", "Approved by a person."),
    Column("auto_approved", "auto_approved", "Approved by a policy rule."),
    Column("break_glass", "break_glass", "Break-glass uses."),
    Column("denied", "denied", "Denied."),
    Column("lapsed", "lapsed", "Lapsed: nobody decided in time."),
    Column("cancelled", "cancelled", "Cancelled by the requester or by policy."),
    Column(
        "auto_share", "auto_share", "`auto_approved / decided`, 0 to 1, four decimals; empty when nothing was decided."
    ),
    Column("avg_time_to_decision_seconds", "avg_time_to_decision", "Mean seconds to a person's decision."),
    Column("max_time_to_decision_seconds", "max_time_to_decision", "Longest seconds to a person's decision."),
)

DECISIONS_BY_APPROVER = (
    Column("approver", "decided_by__username", "The person who gave the last approval or denied (username)."),
    Column("decided", "decided", "Requests they decided."),
    Column("approved", "approved", "Of which approved."),
    Column("denied", "denied", "Of which denied."),
    Column("avg_time_to_decision_seconds", "avg_time_to_decision", "Mean seconds from request to their decision."),
    Column("max_time_to_decision_seconds", "max_time_to_decision", "Longest seconds from request to their decision."),
)

BREAK_GLASS = (
    Column("request_id", "pk", "Request number."),
    Column("grant_id", "grant__id", "Grant number."),
    Column("requested_at", "created_at", "When break-glass was used."),
    Column("user", "requester__username", "Who used it (username)."),
    Column("target", "profile__target__name", "Target (catalog name)."),
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column("requested_duration_seconds", "duration", "How long was asked for, in seconds."),
    Column("justification", "justification", "The emergency they gave."),
    Column("ticket", "ticket", "Ticket reference, if given."),
    Column("grant_status", "grant_status", "Status of the grant."),
    Column("started_at", "started_at", "When the access was provisioned."),
    Column("ended_at", "ended_at", "When it was confirmed gone."),
    Column("review_state", "review_state", "`open` or `closed`."),
    Column("reviewed_by", "review__closed_by__username", "Who closed the review."),
    Column("reviewed_at", "review__closed_at", "When."),
    Column("review_comment", "review__comment", "What the reviewer checked."),
)

DRIFT = (
    Column("finding_id", "pk", "Finding number."),
    Column("found_at", "found_at", "When the reconciler found it."),
    Column("target", "target__name", "Target (catalog name)."),
    Column("external_ref", "external_ref", "The account or object on the target."),
    Column(
        "kind",
        "kind",
        "`orphan` (no grant explains it), `not_revoked` (should be gone) or `missing` (an active grant's "
        "access is gone).",
    ),
    Column("grant_id", "grant_id", "The grant it belongs to, if any."),
    Column("user", "grant__user__username", "That grant's holder."),
    Column("profile", "grant__profile__name", "That grant's profile."),
    Column("action", "action", "What the reconciler did."),
    Column("resolved_at", "resolved_at", "When it was resolved, if it was."),
)

TIMELINE = (
    Column("at", "when", "When it happened."),
    Column(
        "event",
        "what",
        "`requested`, `requested (break-glass)`, `asked for more time`, `request "
        "approved|auto-approved|denied|lapsed|cancelled`, "
        "`access started`, `access ending` (release, revocation or expiry began), `access ended` (confirmed gone), "
        "`approved a request`, `denied a request`, `revoked someone's access`, `closed a break-glass review`.",
    ),
    Column("request_id", "request_no", "The request concerned."),
    Column("grant_id", "grant_no", "The grant concerned, if any."),
    Column("target", "target_name", "Target (catalog name)."),
    Column("profile", "profile_name", "Access profile (title)."),
    Column(
        "counterpart",
        "counterpart",
        "The other party: who decided (or the rule), who ended it, or whose request they decided.",
    ),
    Column("detail", "detail", "Justification, comment, end reason or account on the target."),
)

TIMELINE_EVENTS = (
    Column("event_id", "pk", "Audit event number."),
    Column("at", "created_at", "When it was recorded."),
    Column("action", "action", "What happened, e.g. `request.submitted`."),
    Column("object_type", "object_type", "Kind of object, e.g. `accessrequest`."),
    Column("object_id", "object_id", "Its number."),
    Column("details", "details", "The event's details as JSON."),
    Column("hash", "hash", "The event's hash in the chain."),
)

# An access review's evidence: every item with its decision (reports/reviews.py).
REVIEW_EVIDENCE = (
    Column("review_id", "review_id", "Campaign number."),
    Column("review", "review__title", "Campaign title."),
    Column("item_id", "pk", "Item number."),
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column("person", "person__username", "Whose eligibility was reviewed (username)."),
    Column("person_email", "person__email", "Their email address."),
    Column("role", "role", "`requester` (may request the profile) or `approver` (may approve it)."),
    Column("via", "via", "What gave the eligibility: IdP groups or on-call schedules."),
    Column("grants", "grants", "The person's grants of the profile in the campaign's period."),
    Column("hours", "hours", "Hours of access those grants gave in the period."),
    Column("last_used_at", "last_used_at", "When the latest of them started."),
    Column("break_glass", "break_glass", "How many of them were break-glass."),
    Column("decisions", "decisions", "Requests of the profile the person approved or denied in the period."),
    Column("decision", "decision", "`keep`, `remove`, or empty while undecided."),
    Column("decided_by", "decided_by__username", "The reviewer; empty when the campaign's rule decided."),
    Column("decided_at", "decided_at", "When it was decided."),
    Column("comment", "comment", "The reviewer's comment (or the rule's)."),
    Column("by_rule", "by_rule", "`true` when nobody decided by the due date and the campaign's rule applied."),
    Column("due_at", "review__due_at", "The campaign's due date."),
    Column(
        "changed_from",
        "changed_from",
        "The decision a reviewer's latest change replaced (`keep` or `remove`); empty if it was never changed.",
    ),
    Column(
        "earlier_decisions",
        "earlier_decisions",
        "Every decision replaced, oldest first, one a line: `when decision by reviewer: comment`.",
    ),
    Column("closed_at", "review__closed_at", "When the campaign closed; empty while it is open."),
    Column("closed_early_by", "review__closed_by__username", "Who closed it before its due date; empty otherwise."),
    Column(
        "removal_reinstated_at",
        "removal__reinstated_at",
        "When the removal this item made was lifted (changed to keep, or reinstated after the campaign closed).",
    ),
    Column("removal_reinstated_by", "removal__reinstated_by__username", "Who lifted it."),
    Column("removal_reinstate_reason", "removal__reinstate_reason", "Why it was lifted."),
)

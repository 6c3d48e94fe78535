"""The catalog (targets, access profiles), requests and grants.

Nothing here assigns `status`: every change of state is a function in
`grants/lifecycle.py`.
"""

import datetime

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Case, F, Q, When
from django.db.models.functions import Greatest
from django.utils import timezone

from .connectors import kind_choices


class Target(models.Model):
    class Health(models.TextChoices):
        UNKNOWN = "unknown", "Not checked yet"
        OK = "ok", "Reachable"
        WARNING = "warning", "Reachable, with warnings"
        UNREACHABLE = "unreachable", "Unreachable"

    name = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=32, choices=kind_choices)
    description = models.TextField(blank=True)
    config = models.JSONField(default=dict, blank=True, help_text="Connection settings (no secrets).")
    secret_env = models.CharField(
        max_length=128,
        help_text="Name of the environment variable holding the admin connection string (or NAME_FILE naming a file).",
    )
    notify = models.JSONField(
        default=dict,
        blank=True,
        help_text='Where its profiles\' requests are announced: {"slack": [...], "email": [...], "teams": [...]}.',
    )
    managed_by = models.CharField(
        max_length=500, blank=True, editable=False, help_text="The catalog file that owns this row."
    )
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN, editable=False)
    health_message = models.TextField(blank=True, editable=False)
    checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    reconciled_at = models.DateTimeField(null=True, blank=True, editable=False)
    reconcile_message = models.TextField(blank=True, editable=False)

    def __str__(self):
        return self.title or self.name


class Policy(models.Model):
    """How requests for the profiles that use it are decided.

    `steps`: ordered approval steps, each `{"group": name, "manager": bool,
    "count": n}` (the group's members, or the requester's manager, may
    approve; `count` distinct people). `auto_approve`: rules, each with a
    `name` and any of `groups`, `max_duration` (seconds), `business_hours`
    (`{"tz", "days": [0-6, Monday 0], "start": "HH:MM", "end": "HH:MM"}`),
    `ticket_pattern`; a request that meets every condition of one rule is
    approved by the policy. Schema and checks: `grants/policy.py`.
    """

    name = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200, blank=True)
    steps = models.JSONField(default=list, blank=True)
    auto_approve = models.JSONField(default=list, blank=True)
    min_justification = models.PositiveIntegerField(default=20)
    ticket_pattern = models.CharField(
        max_length=200, blank=True, help_text="If set, the ticket is required and must match."
    )
    request_timeout = models.DurationField(null=True, blank=True, help_text="Empty: JIT_REQUEST_TIMEOUT.")
    break_glass_groups = models.JSONField(
        default=list, blank=True, help_text="Groups that may use break-glass on these profiles."
    )
    managed_by = models.CharField(
        max_length=500, blank=True, editable=False, help_text="The catalog file that owns this row."
    )

    class Meta:
        verbose_name_plural = "policies"

    def __str__(self):
        return self.title or self.name


class AccessProfile(models.Model):
    """A role template on one target that people may ask for."""

    name = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200)
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="profiles")
    description = models.TextField(blank=True)
    scope = models.JSONField(default=dict, blank=True, help_text='What is granted, e.g. {"roles": ["app_readonly"]}.')
    default_duration = models.DurationField(default=datetime.timedelta(hours=1))
    max_duration = models.DurationField(default=datetime.timedelta(hours=8))
    requestable_by = models.ManyToManyField(
        Group, blank=True, related_name="requestable_profiles", help_text="Empty means every signed-in user."
    )
    approver_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.PROTECT, related_name="approvable_profiles"
    )
    manager_approves = models.BooleanField(default=False, help_text="The requester's manager may approve.")
    policy = models.ForeignKey(
        Policy,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="profiles",
        help_text="Empty: one approval by the approver group or (if set) the manager.",
    )
    risk = models.CharField(max_length=16, blank=True)
    notify = models.JSONField(
        default=dict,
        blank=True,
        help_text="Where its requests are announced; per channel kind, instead of the target's.",
    )
    enabled = models.BooleanField(default=True)
    review_reviewers = models.JSONField(
        default=list,
        db_default=[],
        blank=True,
        help_text="Who reviews its eligibility in access reviews (usernames); empty: its approvers.",
    )
    managed_by = models.CharField(
        max_length=500, blank=True, editable=False, help_text="The catalog file that owns this row."
    )

    def __str__(self):
        return self.title


class AccessRequest(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        DENIED = "denied", "Denied"
        CANCELLED = "cancelled", "Cancelled"
        LAPSED = "lapsed", "Lapsed"

    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="access_requests")
    profile = models.ForeignKey(AccessProfile, on_delete=models.PROTECT, related_name="requests")
    duration = models.DurationField()
    justification = models.TextField()
    ticket = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="decided_requests"
    )
    decision_comment = models.TextField(blank=True)
    step = models.PositiveSmallIntegerField(default=0, help_text="Index of the approval step now waiting.")
    step_opened_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the waiting step opened."
    )
    reminded_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the waiting step's approvers were reminded."
    )
    escalated_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the waiting step escalated to its fallback."
    )
    auto_rule = models.CharField(max_length=100, blank=True, help_text="The policy rule that approved it, if any.")
    starts_at = models.DateTimeField(
        null=True, blank=True, help_text="Start of a scheduled window; empty: as soon as approved."
    )
    break_glass = models.BooleanField(default=False)
    extends = models.ForeignKey(
        "Grant",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="extensions",
        help_text="The grant this request asks to extend.",
    )
    bundle = models.UUIDField(
        null=True, blank=True, db_index=True, help_text="Requests made together and decided together."
    )
    params = models.JSONField(
        default=dict, blank=True, help_text="What the requester gave the connector, e.g. an SSH public key."
    )
    reviewers = models.JSONField(
        default=list, db_default=[], blank=True, help_text="Approvers the requester suggested (usernames); told first."
    )
    # Frozen at submission: the approver approves exactly this and the
    # connector provisions exactly this, whatever the profile says later
    # (a scheduled window may start 90 days after it was approved).
    scope = models.JSONField(
        null=True, blank=True, editable=False, help_text="What is granted, copied from the profile at submission."
    )
    max_duration = models.DurationField(
        null=True, blank=True, editable=False, help_text="The profile's maximum at submission."
    )
    target = models.ForeignKey(
        Target,
        null=True,
        blank=True,
        editable=False,
        on_delete=models.PROTECT,
        related_name="requests",
        help_text="The profile's target at submission.",
    )

    class Meta:
        ordering = ["-created_at"]
        # The Decisions report: a period of decisions, latest first.
        indexes = [models.Index(fields=["decided_at", "id"], name="grants_request_decided_id")]

    def __str__(self):
        return f"Request #{self.pk}: {self.profile} for {self.requester}"

    @property
    def effective_scope(self) -> dict:
        """Return what this request grants: its frozen scope (the profile's for rows made before scopes were frozen)."""
        return self.profile.scope if self.scope is None else self.scope

    @property
    def scope_changed(self) -> bool:
        """Whether the profile now grants something else than this request asked for."""
        return self.scope is not None and self.scope != self.profile.scope


class Approval(models.Model):
    """One person's approval of one step of a request."""

    request = models.ForeignKey(AccessRequest, on_delete=models.PROTECT, related_name="approvals")
    step = models.PositiveSmallIntegerField()
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    on_behalf_of = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The approver whose delegate decided, while their delegation ran.",
    )
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["step", "created_at"]
        constraints = [models.UniqueConstraint(fields=["request", "approver"], name="one_step_per_approver")]


class BreakGlassReview(models.Model):
    """A break-glass use that an approver must look at and close with a comment."""

    request = models.OneToOneField(AccessRequest, on_delete=models.PROTECT, related_name="review")
    created_at = models.DateTimeField(default=timezone.now)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)


class Grant(models.Model):
    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        PROVISIONING = "provisioning", "Provisioning"
        ACTIVE = "active", "Active"
        REVOKING = "revoking", "Revoking"
        REVOKED = "revoked", "Revoked"
        FAILED = "failed", "Failed"

    class EndReason(models.TextChoices):
        EXPIRED = "expired", "Expired"
        RELEASED = "released", "Released by the holder"
        REVOKED = "revoked", "Revoked by an admin"
        POLICY = "policy", "Revoked by policy"

    request = models.OneToOneField(AccessRequest, on_delete=models.PROTECT, related_name="grant")
    not_before = models.DateTimeField(null=True, blank=True, help_text="Scheduled window: do not provision before.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="grants")
    profile = models.ForeignKey(AccessProfile, on_delete=models.PROTECT, related_name="grants")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED, db_index=True)
    duration = models.DurationField()
    created_at = models.DateTimeField(default=timezone.now)
    starts_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    external_ref = models.CharField(max_length=200, blank=True)
    # Fernet-sealed credentials, kept only until the holder has seen them once.
    sealed_credentials = models.TextField(blank=True, editable=False)
    credentials_seen_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    revoke_requested_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="When the target finished revoking.")
    verified_at = models.DateTimeField(
        null=True, blank=True, help_text="When a fresh read of the target confirmed the access is gone."
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_error = models.TextField(blank=True)
    reminded_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the holder was told that the access ends soon."
    )
    # What the target kept about the grant's account (grants/activity.py): a size-capped digest read at
    # revocation, and the sessions an SSH host's guard reported. Empty: nothing read or reported.
    activity = models.JSONField(default=dict, db_default={}, blank=True, editable=False)
    # Computed by the database: when the grant stopped existing for the
    # reports' period filter (its access confirmed gone, or its approval time
    # if it failed; empty while it may still exist). Never before
    # `created_at`, so [created_at, window_end] is always a valid range for
    # the index the period filter uses on PostgreSQL (migration 0009).
    window_end = models.GeneratedField(
        expression=Case(
            When(status=Status.FAILED, then=F("created_at")),
            When(verified_at__isnull=False, then=Greatest("verified_at", "created_at")),
            When(revoked_at__isnull=False, then=Greatest("revoked_at", "created_at")),
            default=None,
        ),
        output_field=models.DateTimeField(null=True, blank=True),
        db_persist=True,
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Newest first, for the reports: walked backwards from the end of a
            # period; with window_end, it also counts a long period without the table.
            models.Index(fields=["created_at", "id"], include=["window_end"], name="grants_grant_created_id"),
            # The metrics' last-24-hours latencies (provisioned, confirmed gone).
            models.Index(fields=["starts_at"], name="grants_grant_starts_at"),
            models.Index(fields=["verified_at"], name="grants_grant_verified_at"),
            # The timer and the sweeper (README "Benchmarks"): partial, so each wake-up reads only the
            # grants in that state, however many have ended or are live.
            # Active by expiry: what is due, the next expiry, the "ends in 10 minutes" reminders.
            models.Index(fields=["expires_at"], condition=Q(status="active"), name="grants_grant_active_expiry"),
            # Revocations to retry, by when.
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="revoking"), name="grants_grant_revoking_retry"
            ),
            # Scheduled windows by start, and provisioning to retry.
            models.Index(fields=["not_before"], condition=Q(status="scheduled"), name="grants_grant_scheduled_start"),
        ]

    def __str__(self):
        return f"Grant #{self.pk}: {self.profile} for {self.user}"

    @property
    def scope(self):
        # What was approved, not what the profile says today.
        return self.request.effective_scope

    @property
    def params(self):
        return self.request.params

    @property
    def is_active(self):
        """Active means provisioned and not yet past expiry: a late job can never extend access."""
        return self.status == self.Status.ACTIVE and self.expires_at is not None and self.expires_at > timezone.now()

    @property
    def time_left(self):
        if not self.is_active:
            return datetime.timedelta(0)
        return self.expires_at - timezone.now()

    @property
    def revocation_failing(self):
        return self.status == self.Status.REVOKING and self.attempts >= settings.JIT_REVOKE_FAILING_AFTER

    @property
    def credentials_available(self):
        return bool(self.sealed_credentials) and self.is_active


class DriftFinding(models.Model):
    """Something on a target that no grant explains, or a grant whose access is missing there."""

    class Kind(models.TextChoices):
        ORPHAN = "orphan", "On the target, no grant explains it"
        NOT_REVOKED = "not_revoked", "Should be gone, still on the target"
        MISSING = "missing", "Active grant, gone from the target"
        OBJECTS = "objects", "Objects a grant's account made or granted (removed at revocation)"

    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="drift")
    external_ref = models.CharField(max_length=200)
    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.PROTECT, related_name="drift")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    found_at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=200, blank=True, help_text="What the reconciler did about it.")
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-found_at"]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.external_ref} on {self.target}"


class OnCallSchedule(models.Model):
    """Who is on call: a rotation kept in the catalog, or an iCalendar feed the portal reads and caches.

    A rotation hands over every `shift_length` at `handover` local time in
    `tz`, going through `members` (usernames) in order from `starts_on`;
    `overrides` (`[{"user", "start", "end"}]`, ISO times) win over it. With
    `ics_url`, whoever an event running now names (an attendee's email, or
    the summary as a username or email) is on call. Rules: `grants/oncall.py`.
    """

    name = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200, blank=True)
    tz = models.CharField(max_length=64, default="UTC")
    members = models.JSONField(default=list, blank=True)
    handover = models.CharField(max_length=5, default="09:00")
    shift_length = models.DurationField(default=datetime.timedelta(days=7))
    starts_on = models.DateField(null=True, blank=True)
    overrides = models.JSONField(default=list, blank=True)
    ics_url = models.URLField(max_length=1000, blank=True)
    ics_text = models.TextField(blank=True, editable=False, help_text="The feed as last read.")
    ics_fetched_at = models.DateTimeField(null=True, blank=True, editable=False)
    ics_error = models.TextField(blank=True, editable=False)
    managed_by = models.CharField(
        max_length=500, blank=True, editable=False, help_text="The catalog file that owns this row."
    )

    def __str__(self):
        return self.title or self.name


class StepAssignee(models.Model):
    """A person asked to decide one step of a request because a schedule had them on call (and why)."""

    request = models.ForeignKey(AccessRequest, on_delete=models.PROTECT, related_name="assignees")
    step = models.PositiveSmallIntegerField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    schedule = models.CharField(max_length=64)
    why = models.CharField(max_length=500)
    fallback = models.BooleanField(default=False, help_text="Asked when the step escalated.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["step", "created_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["request", "step", "user", "fallback"], name="one_assignment_per_step")
        ]


class Delegation(models.Model):
    """An approver's delegate for a period (out of office): the delegate may decide what the approver could."""

    delegator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="delegations_given")
    delegate = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="delegations_received"
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True, help_text="Ended early by the approver.")

    class Meta:
        ordering = ["-starts_at"]


class ProfileDecisionDay(models.Model):
    """How the requests of one profile decided on one day (UTC) were decided: the Decisions report's sums.

    Kept by the lifecycle in the transaction of each decision (`grants/tallies.py`);
    a request is decided once, so a day's row only ever grows.
    """

    day = models.DateField()
    profile = models.ForeignKey(AccessProfile, on_delete=models.CASCADE, related_name="+")
    requests = models.PositiveIntegerField(default=0, help_text="Decided, lapsed or cancelled.")
    decided = models.PositiveIntegerField(default=0, help_text="Approved (by anyone or anything) or denied.")
    approved = models.PositiveIntegerField(default=0, help_text="Approved by a person.")
    auto_approved = models.PositiveIntegerField(default=0)
    break_glass = models.PositiveIntegerField(default=0)
    denied = models.PositiveIntegerField(default=0)
    lapsed = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    decided_by_person = models.PositiveIntegerField(default=0, help_text="Approved or denied by a person.")
    person_time = models.DurationField(
        default=datetime.timedelta(0), help_text="Total time from request to a person's decision."
    )
    person_time_max = models.DurationField(
        null=True, blank=True, help_text="Longest time from request to a person's decision."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "profile"], name="grants_profile_decision_day")]


class ApproverDecisionDay(models.Model):
    """What one person approved (the last approval) or denied on
    one day (UTC): the Decisions report's sums per approver."""

    day = models.DateField()
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    decided = models.PositiveIntegerField(default=0)
    approved = models.PositiveIntegerField(default=0)
    denied = models.PositiveIntegerField(default=0)
    person_time = models.DurationField(default=datetime.timedelta(0))
    person_time_max = models.DurationField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "approver"], name="grants_approver_decision_day")]


class AccessReview(models.Model):
    """A certification campaign: reviewers confirm who may keep requesting and approving some profiles.

    Open while `closed_at` is empty. At `due_at` the items nobody decided
    follow `undecided` (said up front); rules and writes: `grants/reviews.py`.
    """

    class Undecided(models.TextChoices):
        KEEP = "keep", "Keep: undecided people keep their eligibility"
        REMOVE = "remove", "Remove: undecided people lose their eligibility"

    title = models.CharField(max_length=200)
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty: opened by the catalog's schedule.",
    )
    opened_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField()
    period_start = models.DateTimeField(help_text="Use is counted from here to the opening.")
    undecided = models.CharField(max_length=8, choices=Undecided.choices, default=Undecided.KEEP)
    schedule = models.CharField(max_length=64, blank=True, help_text="The catalog schedule that opened it, if any.")
    profiles = models.ManyToManyField(AccessProfile, related_name="reviews")
    reminded_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
        help_text="Who closed it before its due date; empty: it closed at the due date.",
    )

    class Meta:
        ordering = ["-opened_at", "-pk"]
        permissions = [("open_accessreview", "Can open access review campaigns")]

    def __str__(self):
        return self.title

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class AccessReviewItem(models.Model):
    """One person's eligibility for one profile (to request it, or to approve it), and the reviewer's decision."""

    class Role(models.TextChoices):
        REQUESTER = "requester", "May request"
        APPROVER = "approver", "May approve"

    class Decision(models.TextChoices):
        KEEP = "keep", "Keep"
        REMOVE = "remove", "Remove"

    review = models.ForeignKey(AccessReview, on_delete=models.PROTECT, related_name="items")
    profile = models.ForeignKey(AccessProfile, on_delete=models.PROTECT, related_name="+")
    person = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=16, choices=Role.choices)
    via = models.CharField(max_length=500, blank=True, help_text="What gives it: the groups or schedules.")
    # The person's use of the profile in the campaign's period, counted at its opening.
    grants = models.PositiveIntegerField(default=0)
    hours = models.FloatField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)
    break_glass = models.PositiveIntegerField(default=0)
    decisions = models.PositiveIntegerField(default=0, help_text="Requests of the profile the person decided.")
    decision = models.CharField(max_length=8, choices=Decision.choices, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    by_rule = models.BooleanField(default=False, help_text="Decided by the campaign's rule at the due date.")
    # A reviewer may change the decision while the campaign is open; what it was stays here (and in the trail).
    changed_from = models.CharField(
        max_length=8, choices=Decision.choices, blank=True, help_text="The decision the latest change replaced."
    )
    earlier_decisions = models.TextField(blank=True, help_text="Every decision replaced, oldest first, one a line.")

    class Meta:
        ordering = ["profile__name", "role", "person__username", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["review", "profile", "person", "role"], name="one_review_item_per_role")
        ]


class EligibilityRemovalQuerySet(models.QuerySet):
    def in_force(self):
        """The removals the policy honours: those nobody reinstated."""
        return self.filter(reinstated_at=None)


class EligibilityRemoval(models.Model):
    """A person an access review removed from requesting or approving a profile: the policy refuses them.

    The IdP group that gave the eligibility lives in the IdP; its managers
    are told, and the portal keeps refusing whatever the group says, until
    the removal is reinstated (`reinstated_at`): by a reviewer changing the
    decision while the campaign is open, or by an opener of campaigns after.
    Every read that enforces it goes through `in_force()`.
    """

    person = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    profile = models.ForeignKey(AccessProfile, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=16, choices=AccessReviewItem.Role.choices)
    item = models.OneToOneField(
        AccessReviewItem, null=True, blank=True, on_delete=models.PROTECT, related_name="removal"
    )
    created_at = models.DateTimeField(default=timezone.now)
    reinstated_at = models.DateTimeField(null=True, blank=True)
    reinstated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reinstate_reason = models.TextField(blank=True)

    objects = EligibilityRemovalQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["person", "profile", "role"],
                condition=models.Q(reinstated_at=None),
                name="one_removal_in_force_per_role",
            )
        ]

    @property
    def in_force(self) -> bool:
        return self.reinstated_at is None


class ReviewSchedule(models.Model):
    """Access reviews the catalog opens on a calendar (`reviews:` in the catalog file; grants/reviews.py opens them).

    At the start of each month, quarter, half-year or year (UTC) a campaign
    over `profiles` (empty: every enabled profile) opens, due `due_in` later.
    """

    class Every(models.TextChoices):
        MONTH = "month", "Every month"
        QUARTER = "quarter", "Every quarter"
        HALF_YEAR = "half-year", "Every half-year"
        YEAR = "year", "Every year"

    name = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200, blank=True)
    every = models.CharField(max_length=16, choices=Every.choices)
    due_in = models.DurationField(default=datetime.timedelta(days=14))
    undecided = models.CharField(max_length=8, choices=AccessReview.Undecided.choices, default="keep")
    profiles = models.JSONField(default=list, blank=True, help_text="Profile names; empty: every enabled profile.")
    managed_by = models.CharField(
        max_length=500, blank=True, editable=False, help_text="The catalog file that owns this row."
    )

    def __str__(self):
        return self.title or self.name

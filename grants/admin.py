from django.contrib import admin, messages
from django.db import models

from . import lifecycle
from .models import (
    AccessProfile,
    AccessRequest,
    AccessReview,
    AccessReviewItem,
    Delegation,
    DriftFinding,
    EligibilityRemoval,
    Grant,
    OnCallSchedule,
    Policy,
    ReviewSchedule,
    Target,
)
from .tasks import check_target


class _CatalogManaged:
    """Rows that a catalog file owns are read-only here, so the file and the admin never fight."""

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.managed_by:
            return [f.name for f in self.model._meta.fields] + [f.name for f in self.model._meta.many_to_many]
        return super().get_readonly_fields(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.managed_by:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="Managed by")
    def managed(self, obj):
        return obj.managed_by or "admin"


@admin.register(Target)
class TargetAdmin(_CatalogManaged, admin.ModelAdmin):
    list_display = ("name", "kind", "health", "checked_at", "managed")
    readonly_fields = ("health", "health_message", "checked_at", "managed_by")
    actions = ["check_now"]

    # Read-only staff (auditors) see targets too; checking connects with the portal's admin
    # credentials and writes the target's health, so it needs the change permission.
    @admin.action(description="Check that the selected targets are reachable", permissions=["change"])
    def check_now(self, request, queryset):
        for target in queryset:
            health, message = check_target(target)
            level = messages.SUCCESS if health == Target.Health.OK else messages.WARNING
            self.message_user(request, f"{target.name}: {Target.Health(health).label}. {message}", level)


@admin.register(Policy)
class PolicyAdmin(_CatalogManaged, admin.ModelAdmin):
    list_display = ("name", "title", "request_timeout", "managed")
    readonly_fields = ("managed_by",)


@admin.register(AccessProfile)
class AccessProfileAdmin(_CatalogManaged, admin.ModelAdmin):
    list_display = (
        "name",
        "title",
        "target",
        "max_duration",
        "policy",
        "approver_group",
        "manager_approves",
        "enabled",
        "managed",
    )
    list_filter = ("enabled", "target", "policy")
    filter_horizontal = ("requestable_by",)
    readonly_fields = ("managed_by",)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "enabled" in form.changed_data and not obj.enabled:
            cancelled = lifecycle.cancel_requests_of_disabled_profile(obj)
            if cancelled:
                self.message_user(
                    request, f"Cancelled {len(cancelled)} pending request(s) for {obj.title} (reason: policy)."
                )


class _LifecycleOwnsStatus:
    """Statuses change only through the lifecycle, so the admin shows them read-only."""

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]


@admin.register(AccessRequest)
class AccessRequestAdmin(_LifecycleOwnsStatus, admin.ModelAdmin):
    list_display = ("id", "requester", "profile", "duration", "status", "created_at", "decided_by")
    list_filter = ("status", "profile")
    list_select_related = ("requester", "profile", "decided_by")
    search_fields = ("requester__username", "justification", "ticket")


@admin.register(Grant)
class GrantAdmin(_LifecycleOwnsStatus, admin.ModelAdmin):
    list_display = ("id", "user", "profile", "status", "expires_at", "end_reason", "verified_at", "revocation_failing")
    list_filter = ("status", "end_reason", "profile")
    list_select_related = ("user", "profile")
    exclude = ("sealed_credentials",)
    actions = ["revoke_selected"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name != "sealed_credentials"]

    @admin.display(boolean=True, description="Revocation failing")
    def revocation_failing(self, obj):
        return obj.revocation_failing

    @admin.action(description="Revoke the selected grants now", permissions=["change"])
    def revoke_selected(self, request, queryset):
        done = 0
        for grant in queryset:
            try:
                lifecycle.revoke_grant(grant.pk, actor=request.user, reason=Grant.EndReason.REVOKED)
                done += 1
            except (lifecycle.TransitionError, lifecycle.NotAllowedError) as exc:
                self.message_user(request, f"Grant #{grant.pk}: {exc}", messages.WARNING)
        if done:
            self.message_user(request, f"Revoking {done} grant(s); each is marked revoked once the target confirms.")


@admin.register(DriftFinding)
class DriftFindingAdmin(_LifecycleOwnsStatus, admin.ModelAdmin):
    list_display = ("found_at", "target", "external_ref", "kind", "grant", "action")
    list_filter = ("kind", "target")


@admin.register(OnCallSchedule)
class OnCallScheduleAdmin(_CatalogManaged, admin.ModelAdmin):
    list_display = ("name", "title", "tz", "handover", "shift_length", "ics_url", "ics_fetched_at", "managed")
    readonly_fields = ("ics_fetched_at", "ics_error", "managed_by")
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # a feed URL typed without one is https


@admin.register(Delegation)
class DelegationAdmin(_LifecycleOwnsStatus, admin.ModelAdmin):
    """Approvers name and end their delegates themselves (pages, API: audited); the admin shows them."""

    list_display = ("delegator", "delegate", "starts_at", "ends_at", "ended_at", "reason")
    list_filter = ("ends_at",)


class _ReadOnly:
    """Decisions, closings and reinstatements go through the portal's pages and API, where they are audited."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AccessReview)
class AccessReviewAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ("id", "title", "opened_by", "opened_at", "due_at", "undecided", "closed_at", "closed_by")
    list_filter = ("undecided", ("closed_at", admin.EmptyFieldListFilter), "schedule")
    list_select_related = ("opened_by", "closed_by")
    search_fields = ("title", "schedule")


@admin.register(AccessReviewItem)
class AccessReviewItemAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ("id", "review", "profile", "person", "role", "decision", "changed_from", "decided_by", "by_rule")
    list_filter = ("decision", "role", "by_rule", "profile")
    list_select_related = ("review", "profile", "person", "decided_by")
    search_fields = ("person__username", "profile__name", "review__title", "comment")


@admin.register(EligibilityRemoval)
class EligibilityRemovalAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ("id", "person", "profile", "role", "created_at", "reinstated_at", "reinstated_by")
    list_filter = ("role", ("reinstated_at", admin.EmptyFieldListFilter), "profile")
    list_select_related = ("person", "profile", "reinstated_by")
    search_fields = ("person__username", "profile__name", "reinstate_reason")


@admin.register(ReviewSchedule)
class ReviewScheduleAdmin(_ReadOnly, admin.ModelAdmin):
    """The catalog file owns the schedules (`reviews:`); the admin shows them."""

    list_display = ("name", "title", "every", "due_in", "undecided", "managed_by")
    list_filter = ("every", "undecided")
    search_fields = ("name", "title")

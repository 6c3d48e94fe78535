from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .forms import AdminLoginForm
from .models import ApiToken, User

# The admin's login is the emergency path outside demo mode: throttled and audited (accounts/login.py).
admin.site.login_form = AdminLoginForm


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    identity_fields = ("manager_ref", "idp_subject", "employee_id", "identity_refreshed_at", "deactivated_by_idp_at")
    fieldsets = BaseUserAdmin.fieldsets + (("Organisation", {"fields": ("manager", *identity_fields)}),)
    readonly_fields = identity_fields
    list_display = ("username", "email", "first_name", "last_name", "manager", "is_staff")
    autocomplete_fields = ("manager",)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Read-only: tokens are made and revoked by their owners on the API tokens page (and audited there)."""

    list_display = ("name", "user", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

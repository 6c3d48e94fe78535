from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .models import User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    fieldsets = BaseUserAdmin.fieldsets + (("Organisation", {"fields": ("manager",)}),)
    list_display = ("username", "email", "first_name", "last_name", "manager", "is_staff")
    autocomplete_fields = ("manager",)

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings


class AccountAdapter(DefaultAccountAdapter):
    """Local accounts: sign-in only in demo mode, never self sign-up."""

    def is_open_for_signup(self, request):
        return False

    def login(self, request, user):
        import audit

        super().login(request, user)
        audit.record("user.login", actor=user, obj=user, details={"method": "password" if settings.DEMO_MODE else "sso"})

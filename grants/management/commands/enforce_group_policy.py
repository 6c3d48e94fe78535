"""Revoke grants and cancel requests that their holders' current groups no longer allow."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from grants.lifecycle import enforce_group_policy
from grants.models import AccessRequest, Grant


class Command(BaseCommand):
    help = "Check every user with live grants or pending requests against their current groups (reason: policy)."

    def handle(self, *args, **options):
        User = get_user_model()
        holders = set(Grant.objects.filter(status__in=[Grant.Status.SCHEDULED, Grant.Status.ACTIVE]).values_list("user", flat=True))
        holders |= set(AccessRequest.objects.filter(status=AccessRequest.Status.PENDING).values_list("requester", flat=True))
        total_g = total_r = 0
        for user in User.objects.filter(pk__in=holders):
            revoked, cancelled = enforce_group_policy(user)
            total_g += len(revoked)
            total_r += len(cancelled)
            for pk in revoked:
                self.stdout.write(f"revoked grant #{pk} of {user.username}")
            for pk in cancelled:
                self.stdout.write(f"cancelled request #{pk} of {user.username}")
        self.stdout.write(f"{total_g} grant(s) revoked, {total_r} request(s) cancelled.")

"""One lock order everywhere: a grant's row, then the audit chain."""

import datetime
import threading
import time

import pytest
from django.db import connection, transaction

import audit
from grants import lifecycle
from grants.models import Grant

pytestmark = pytest.mark.postgres_only(
    "the fault suite is the production set-up: portal processes sharing a PostgreSQL database over TCP, its "
    "connections killed and refused"
)


@pytest.mark.django_db(transaction=True)
def test_approving_an_extension_while_a_worker_holds_the_grant_waits_for_it_instead_of_deadlocking(ana, otto, profile):
    req = lifecycle.submit_request(
        requester=ana,
        profile=profile,
        duration=datetime.timedelta(minutes=30),
        justification="Investigate INC-4711: slow order queries on appdb",
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    extension = lifecycle.request_extension(
        grant.pk,
        actor=ana,
        duration=datetime.timedelta(minutes=30),
        justification="The migration needs another half hour",
    )
    holding, errors = threading.Event(), []

    def worker():
        # What extend_on_target and provision_grant do: the grant's row, a target call, then the trail.
        try:
            with transaction.atomic():
                locked = Grant.objects.select_for_update().get(pk=grant.pk)
                holding.set()
                time.sleep(1.5)  # the target call; the approval arrives meanwhile
                audit.record("grant.extend_failed", obj=locked, details={"error": "the target did not answer"})
        except Exception as exc:  # noqa: BLE001 (any error fails the test, asserted below)
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    holding.wait()
    try:
        lifecycle.approve_request(extension.pk, actor=otto)
    except Exception as exc:  # noqa: BLE001 (any error fails the test, asserted below)
        errors.append(exc)
    thread.join()
    assert errors == []
    assert Grant.objects.get(pk=grant.pk).expires_at == grant.expires_at + datetime.timedelta(minutes=30)

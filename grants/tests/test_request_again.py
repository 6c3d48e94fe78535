"""Request again: the request form filled from one's own earlier request, linked from My access and the request page."""

import datetime

from django.urls import reverse

from grants import lifecycle

from .conftest import JUSTIFICATION
from .support import detail_url

NEW = reverse("grants:request_new")
MY_ACCESS = reverse("grants:my_access")


def text(response):
    return response.content.decode()


# Pages --------------------------------------------------------------------------------------------


def test_request_again_fills_the_form_from_ones_own_request(client, ana, profile, rw_profile):
    earlier = lifecycle.submit_request(
        requester=ana,
        profile=rw_profile,
        duration=datetime.timedelta(hours=1, minutes=30),
        justification=JUSTIFICATION,
        ticket="INC-77",
    )
    client.force_login(ana)
    page = text(client.get(NEW, {"again": earlier.pk}))
    assert f'<option value="{rw_profile.pk}" selected>appdb read-write</option>' in page
    assert 'value="1h30m"' in page
    assert f">\n{JUSTIFICATION}</textarea>" in page
    assert 'value="INC-77"' in page


def test_request_again_ignores_someone_elses_request(client, marc, pending_request):
    client.force_login(marc)
    response = client.get(NEW, {"again": pending_request.pk})
    assert response.status_code == 200
    page = text(response)
    assert JUSTIFICATION not in page
    assert "INC-4711" not in page
    assert " selected>appdb read-only" not in page


def test_request_again_with_garbage_or_unknown_ids_shows_an_empty_form(client, ana, profile):
    client.force_login(ana)
    for again in ("abc", "999999", ""):
        response = client.get(NEW, {"again": again})
        assert response.status_code == 200
        assert JUSTIFICATION not in text(response)


def test_my_requests_and_my_own_request_page_link_to_request_again(client, ana, otto, pending_request):
    link = f'href="{NEW}?again={pending_request.pk}">Request again</a>'
    client.force_login(ana)
    assert link in text(client.get(MY_ACCESS))
    assert link in text(client.get(detail_url(pending_request)))
    client.force_login(otto)
    assert "Request again" not in text(client.get(detail_url(pending_request)))

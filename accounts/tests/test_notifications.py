"""The notifications page at /accounts/notifications/: each person chooses email, Slack or both."""

from django.urls import reverse

from accounts.models import NotificationPreference

URL = "/accounts/notifications/"


def test_the_page_needs_a_signed_in_user(client, db):
    response = client.get(URL)
    assert response.status_code == 302
    assert reverse("account_login") in response["Location"]


def test_the_page_has_labelled_choices_a_save_button_and_a_nav_link(client, ana):
    client.force_login(ana)
    page = client.get(URL).content.decode()
    assert '<label for="id_email">Email</label>' in page
    assert '<label for="id_slack">Slack</label>' in page
    assert '<button type="submit" class="primary">Save</button>' in page
    assert f'<a href="{URL}">Notifications</a>' in page
    assert 'id="id_email" checked>' in page and 'id="id_slack" checked>' in page  # both, until chosen otherwise


def test_without_a_choice_saved_both_are_on(ana):
    preference = NotificationPreference.of(ana)
    assert (preference.email, preference.slack, preference.pk) == (True, True, None)


def test_a_person_chooses_email_only_and_the_page_remembers(client, ana):
    client.force_login(ana)
    response = client.post(URL, {"email": "on"})
    assert response.status_code == 302 and response["Location"] == URL
    preference = NotificationPreference.objects.get(user=ana)
    assert (preference.email, preference.slack) == (True, False)
    page = client.get(URL).content.decode()
    assert "Notification settings saved." in page
    assert 'id="id_email" checked>' in page and 'id="id_slack">' in page


def test_a_person_chooses_slack_only(client, ana):
    client.force_login(ana)
    client.post(URL, {"slack": "on"})
    preference = NotificationPreference.objects.get(user=ana)
    assert (preference.email, preference.slack) == (False, True)


def test_the_page_says_when_slack_is_not_configured(client, ana, settings):
    settings.SLACK_BOT_TOKEN = ""
    client.force_login(ana)
    assert "no Slack app configured" in client.get(URL).content.decode()

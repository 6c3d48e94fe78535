"""A person at the portal over plain HTTP (requests): signing in through the IdP, filling in the portal's forms.

No browser: the image test checks the container, not the pages' looks, and a requests session with the
forms' hidden fields (the CSRF token, the approval step) is what a browser would send.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests

TIMEOUT = 15


class _Forms(HTMLParser):
    """Collect each <form>'s action and the name and value of its inputs, selects and textareas."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._form = None
        self._select = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self._form = {"action": attrs.get("action") or "", "fields": {}, "options": {}}
            self.forms.append(self._form)
        elif self._form is None:
            return
        elif tag == "input" and attrs.get("name") and attrs.get("type") not in ("submit", "checkbox", "radio"):
            self._form["fields"][attrs["name"]] = attrs.get("value") or ""
        elif tag == "select" and attrs.get("name"):
            self._select = attrs["name"]
            self._form["options"][self._select] = []
        elif tag == "option" and self._select:
            self._option_value = attrs.get("value", "")

    def handle_data(self, data):
        if self._select and getattr(self, "_option_value", None) is not None and data.strip():
            self._form["options"][self._select].append((self._option_value, data.strip()))
            self._option_value = None

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None


def forms(html: str) -> list[dict]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def form_posting_to(page: requests.Response, pattern: str) -> dict:
    """Return the first form of `page` whose target URL (its action, else the page) matches the regex `pattern`."""
    for form in forms(page.text):
        form["url"] = urljoin(page.url, form["action"] or page.url)
        if re.search(pattern, urlsplit(form["url"]).path):
            return form
    raise AssertionError(f"no form posting to {pattern!r} on {page.url}:\n{page.text[:3000]}")


class Person:
    """One person's session at the portal (its cookies, its CSRF token)."""

    def __init__(self, portal_url: str, username: str, password: str):
        self.portal_url, self.username, self.password = portal_url, username, password
        self.http = requests.Session()

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(urljoin(self.portal_url, path), timeout=TIMEOUT, **kwargs)

    def submit(self, page: requests.Response, action_pattern: str, **fields) -> requests.Response:
        """Post the form of `page` whose action matches, its hidden fields kept, `fields` filled in."""
        form = form_posting_to(page, action_pattern)
        return self.http.post(form["url"], data={**form["fields"], **fields}, timeout=TIMEOUT)

    def sign_in(self, idp_issuer: str) -> requests.Response:
        """Sign in the way a browser does: the portal's button, the IdP's login form, back to the portal."""
        start = self.get("/accounts/oidc/idp/login/")
        assert start.status_code == 200, start.text[:1000]
        # allauth asks for a POST (SOCIALACCOUNT_LOGIN_ON_GET is off) before it leaves for the IdP.
        at_idp = self.submit(start, r"/accounts/oidc/idp/login/")
        assert at_idp.url.startswith(idp_issuer) and 'for="username"' in at_idp.text, (at_idp.url, at_idp.text[:1000])
        uid = urlsplit(at_idp.url).path.rstrip("/").split("/")[-1]
        back = self.http.post(
            urljoin(at_idp.url, f"/interaction/{uid}/login"),
            data={"username": self.username, "password": self.password},
            timeout=TIMEOUT,
        )
        assert back.status_code == 200 and back.url.startswith(self.portal_url + "/access/"), (
            back.url,
            back.text[:1000],
        )
        return back

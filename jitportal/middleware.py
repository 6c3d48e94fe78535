import re
import urllib.parse
import uuid

from django.core.signals import request_finished
from django.http import HttpResponseBadRequest, JsonResponse
from django.urls import Resolver404, resolve

from .logging import request_id

# What a proxy may hand us as a request id: nginx's $request_id (32 hex
# digits), a UUID, a trace id. Anything else is replaced, so a client
# cannot put line breaks or megabytes into our logs and headers.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:=+/-]{1,128}")
API_PREFIX = "/api/"  # jitportal/urls.py


class RequestIdMiddleware:
    """Give each request an id (the proxy's X-Request-ID, or a new one) for logs and the response header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.headers.get("X-Request-ID", "")
        request.request_id = given if SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        # Kept until the response is finished, not just until it leaves the
        # middleware: Django logs 4xx/5xx responses ("Not Found: ...") after that.
        request_id.set(request.request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response


def _forget_request_id(**kwargs):
    request_id.set(None)


request_finished.connect(_forget_request_id, dispatch_uid="jitportal.middleware.forget_request_id")


class RefuseNulMiddleware:
    """Answer 400 to an address with a NUL character (%00) in its path or query, before any view reads it.

    PostgreSQL text cannot hold NUL, so a path or query value carrying one
    would fail in whichever query it reached (a server error); no page, API
    operation or probe takes one, so refuse it once for all of them.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path_info or "\x00" in urllib.parse.unquote(query):
            message = "The address contains a NUL character (%00); remove it."
            if request.path_info.startswith(API_PREFIX):
                # In the API's documented error shape, which the CLI and scripts read.
                return JsonResponse({"code": "invalid", "message": message}, status=400)
            return HttpResponseBadRequest(message + "\n", content_type="text/plain")
        return self.get_response(request)


class ProbeMiddleware:
    """Answer /healthz, /readyz and /metrics before the rest of the middleware.

    Load balancers and Prometheus call a backend by its address, over plain
    HTTP: the host check (ALLOWED_HOSTS) would answer 400 and the HTTPS
    redirect 301. These views build no URLs from the Host header, use no
    session and no user, so skipping both is safe, and keeps them cheap.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        if getattr(match.func, "probe", False):
            return match.func(request, *match.args, **match.kwargs)
        return self.get_response(request)

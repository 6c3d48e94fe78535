"""The SSH kind's own endpoints: the KRL hosts fetch for sshd's `RevokedKeys`, and the guards' session reports."""

import logging

from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from grants import activity
from grants.models import Target

from .. import ConnectorError, get_connector
from ..digest import SessionReportError

log = logging.getLogger(__name__)


def ssh_krl(request, target):
    """Serve the current Key Revocation List of an SSH target,
    for hosts' `RevokedKeys` (public: it lists serials only)."""
    target = get_object_or_404(Target, name=target, kind="ssh")
    try:
        with get_connector(target) as connector:
            data = connector.krl_bytes()
    except ConnectorError as exc:
        # Anyone may fetch the KRL: the reason (variable names, file paths) is for the operator's log only.
        log.error("The KRL of SSH target %s is unavailable: %s", target.name, exc.message)
        return HttpResponse("KRL unavailable.\n", status=503, content_type="text/plain")
    response = HttpResponse(data, content_type="application/octet-stream")
    response["Content-Disposition"] = f'attachment; filename="{target.name}.krl"'
    response["Cache-Control"] = "no-cache"
    return response


@csrf_exempt  # no browser session: each report is signed with its host's secret (HMAC), checked below
@require_POST
def ssh_session_report(request, target):
    """Record a session a host's guard reports (start, or end), signed with that host's secret."""
    target = get_object_or_404(Target, name=target, kind="ssh")
    try:
        with get_connector(target) as connector:
            report = connector.verify_session_report(
                host=request.headers.get("X-Jit-Host", ""),
                timestamp=request.headers.get("X-Jit-Timestamp", ""),
                signature=request.headers.get("X-Jit-Signature", ""),
                body=request.body,
            )
        grant_id = report.pop("grant_id")
        activity.record_ssh_session(target=target, grant_id=grant_id, report=report)
    except SessionReportError as exc:
        return JsonResponse({"error": exc.message}, status=exc.http_status)
    except ConnectorError as exc:
        # The host cannot fix the portal's configuration: the reason is for the operator's log.
        log.error("SSH target %s cannot take session reports: %s", target.name, exc.message)
        return JsonResponse({"error": "This target takes no session reports."}, status=503)
    return JsonResponse({"recorded": True})

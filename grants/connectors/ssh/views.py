"""The SSH kind's own endpoint: the KRL hosts fetch for sshd's `RevokedKeys`."""

import logging

from django.http import HttpResponse
from django.shortcuts import get_object_or_404

from grants.models import Target

from .. import ConnectorError, get_connector

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

"""Exit 0 if the web process in this container answers /healthz: the image's HEALTHCHECK (Containerfile, compose.yaml).

    python -m jitportal.healthcheck

It asks 127.0.0.1 on $PORT (gunicorn's port, 8000 unless set) and imports no Django, so it costs little
every 30 seconds.
"""

import http.client
import os
import sys
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz"
    # No proxy: HTTP_PROXY set for the portal's outgoing traffic must not carry a check of our own port.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=4) as response:
            response.read()
    except (OSError, http.client.HTTPException) as exc:  # refused, timed out, an HTTP error status, garbage
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

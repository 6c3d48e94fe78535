"""One JSON object per log line, carrying the id of the request it belongs to.

`jitportal.middleware.RequestIdMiddleware` sets `request_id` for the
duration of a request; log lines written outside a request (workers, the
expiry timer, commands) carry `null`.
"""

import datetime
import json
import logging
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id.get(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a message is already a string, but never let a log line raise.
        return json.dumps(entry, default=str, ensure_ascii=False)

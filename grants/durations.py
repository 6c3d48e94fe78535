"""Durations as people write and read them: "90m", "2h", "1h30m", "1d"."""

import datetime
import re

_PART = re.compile(r"(\d+)\s*(min|d|h|m)?", re.I)
_UNIT = {"d": 86400, "h": 3600, "m": 60, "min": 60, None: 60}


def parse_duration(text: str) -> datetime.timedelta:
    """Parse '90', '90m', '2h', '1h30m' or '1d' into a timedelta (a bare number is minutes)."""
    text = (text or "").strip().lower().replace(" ", "")
    if text.startswith("-"):
        raise ValueError("negative")
    pos, seconds = 0, 0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m:
            raise ValueError(text)
        seconds += int(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not text:
        raise ValueError("empty")
    return datetime.timedelta(seconds=seconds)


def format_duration(delta: datetime.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    return "".join(f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m")) if n) or "0m"


def human_duration(delta: datetime.timedelta) -> str:
    """Return e.g. '30 min', '2 h', '1 h 30 min', '3 d' (seconds dropped)."""
    minutes = int(delta.total_seconds() // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{n} {u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "min")) if n]
    return " ".join(parts) or f"{int(delta.total_seconds())} s"

"""The audit trail: an append-only, hash-chained event log.

`audit.record(...)` is the one way to write it; it imports none of our apps.
"""


def record(action, *, actor=None, obj=None, details=None):
    from .log import record as _record  # noqa: PLC0415 (the app registry imports this package before the models, which audit.log imports)

    return _record(action, actor=actor, obj=obj, details=details)


def record_many(events):
    from .log import record_many as _record_many  # noqa: PLC0415 (the app registry imports this package before the models, which audit.log imports)

    return _record_many(events)

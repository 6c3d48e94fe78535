"""The notification tests use the grants suite's catalog on the real target cluster and its personas."""

from grants.tests.conftest import (  # noqa: F401 (fixtures)
    JUSTIFICATION,
    active_grant,
    admin_user,
    ana,
    approved_request,
    audra,
    bob,
    eve,
    groups,
    marc,
    otto,
    pending_request,
    profile,
    rw_profile,
    target,
)

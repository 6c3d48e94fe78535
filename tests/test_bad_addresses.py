"""Addresses no page can take get a 4xx that says what is wrong, from every page, never a server error."""

import pytest

NUL_ADDRESSES = [
    "/audit/users/%00/",  # a path parameter
    "/audit/users/?username=ana%00",  # redirected to a path parameter
    "/audit/access/?user=%00",  # a report filter
    "/audit/decisions/?approver=x%00y&format=csv",  # a download's filter
    "/admin/auth/user/?q=%00",  # the admin's search
    "/access/request/?again=%00",
    "/metrics?x=%00",  # the probes too
]


@pytest.mark.parametrize("address", NUL_ADDRESSES)
def test_a_nul_character_in_the_address_is_a_400_for_everyone(client, admin_user, address):
    # PostgreSQL text cannot hold NUL: reaching a query, it was a server error (DataError).
    for signed_in in (False, True):
        if signed_in:
            client.force_login(admin_user)
        response = client.get(address)
        assert response.status_code == 400, (address, signed_in)
        assert response.content.decode() == "The address contains a NUL character (%00); remove it.\n"


def test_the_api_says_it_in_its_own_error_shape(client, admin_user):
    for address in ("/api/v1/requests?%00=1", "/api/v1/requests/%00"):
        response = client.get(address)
        assert response.status_code == 400
        assert response.json() == {
            "code": "invalid",
            "message": "The address contains a NUL character (%00); remove it.",
        }


def test_an_encoded_percent_sign_is_not_a_nul(client, admin_user):
    client.force_login(admin_user)
    assert client.get("/audit/access/?user=%2500").status_code == 200  # the user "%00", who does not exist
    assert client.get("/audit/users/%2500/").status_code == 404

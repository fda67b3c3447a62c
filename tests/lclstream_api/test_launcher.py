"""Which jobs are submitted on behalf of their owner (pure)."""

from lclstream_api.launcher import delegation_headers
from lclstream_api.settings import ApiSettings


def test_uid_owners_are_delegated_services_are_not():
    assert delegation_headers("uid:alice") == {"X-On-Behalf-Of": "uid:alice"}
    assert delegation_headers("cn:client") == {}
    assert delegation_headers("uid:alice", delegate=False) == {}


def test_delegation_is_on_by_default_and_can_be_turned_off():
    assert ApiSettings().delegate is True
    assert ApiSettings(delegate=False).delegate is False

"""What the service and the client say when the server they call cannot be reached, or
takes the request and does not answer (real mTLS servers on 127.0.0.1)."""

from __future__ import annotations

import pytest

from lclstream_api.client.api import Client
from lclstream_api.client.errors import ServerError
from lclstream_api.launcher import LaunchError, PsikApiLauncher
from psik.models import JobSpec
from tests.support.servers import start_certified_server


@pytest.fixture
def stalled(pki, spawn) -> str:
    """A trusted HTTPS server, nickname `stalled`, that never answers a request."""
    _proc, url = start_certified_server(spawn, pki.server, "tests.support.asgi_apps:stalled")
    pki.add_service(pki.client, "stalled", url)
    return "https://stalled"


@pytest.mark.timeout(60)
def test_a_psik_api_that_does_not_answer_is_not_called_unreachable(pki, stalled):
    launcher = PsikApiLauncher(pki.client, stalled, timeout=1.0)
    with pytest.raises(LaunchError) as err:
        launcher.submit(JobSpec(script="true"), "uid:alice")
    launcher.close()
    assert str(err.value) == (
        "psik-api at https://stalled did not answer POST /jobs within 1 s"
        " (psik-api may be waiting on its batch system, e.g. sbatch: see its log)"
    )


@pytest.mark.timeout(60)
def test_a_psik_api_that_is_down_is_unreachable(pki, free_port):
    pki.add_service(pki.client, "down", f"https://127.0.0.1:{free_port()}")
    launcher = PsikApiLauncher(pki.client, "https://down", timeout=5.0)
    with pytest.raises(LaunchError, match=r"^psik-api at https://down is unreachable: "):
        launcher.submit(JobSpec(script="true"), "uid:alice")
    launcher.close()


@pytest.mark.timeout(60)
def test_the_client_says_the_service_did_not_answer(pki, stalled):
    with Client(stalled, pki.client, timeout=1.0) as client, pytest.raises(ServerError) as err:
        client.get("t-1")
    assert str(err.value) == "https://stalled did not answer GET /transfers/t-1 within 1 s"

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


def test_jobs_get_job_environment_and_buffers_the_job_identity_as_written():
    """`job_environment` reaches every job (PATH through sudo/SLURM); `job_identity` is
    passed unexpanded, so `~` is the home of the user the buffer job runs as."""
    import shlex
    import time

    from lclstream_api.models import Transfer, TransferOptions
    from lclstream_api.service import Service

    class _Launcher:
        callbacks = True

    path = "/opt/lclstream/venv/bin:/usr/bin:/bin"
    settings = ApiSettings(job_environment={"PATH": path}, job_identity="~/.config/certified")
    svc = Service(settings, _Launcher(), store=None, metrics=None)  # type: ignore[arg-type]
    now = time.time()
    roles = ["producer", "buffer-0"]
    t = Transfer(id="t1", owner="uid:alice", created=now, updated=now,
                 options=TransferOptions(), roles=roles, ports=[20000, 20001])  # fmt: skip
    buffer = svc._buffer_spec(t, 0, 2, "secret")
    producer = svc._producer_spec(t, {"event_source": {}}, "secret")
    assert buffer.environment == {"PATH": path, "NNGSTREAM_CB_SECRET": "secret"}
    assert producer.environment == {"PATH": path}
    args = shlex.split(buffer.script)
    assert args[args.index("--certified-config") + 1] == "~/.config/certified"

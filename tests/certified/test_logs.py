"""One JSON log shape for every service: access lines and application lines alike."""

from __future__ import annotations

import io
import json
import logging
import signal

import pytest

from certified.logs import JsonFormatter, configure_json_logging
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)
SHAPE = {"time", "level", "logger", "message"}


@pytest.fixture
def _root_logger():
    """configure_json_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_formatter_shape_with_extras_and_exceptions(_root_logger):
    stream = io.StringIO()
    configure_json_logging("DEBUG", stream)
    log = logging.getLogger("some.service")
    log.info("hello %s", "world", extra={"peer": "127.0.0.1:1", "n": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(first) >= SHAPE and first["message"] == "hello world"
    assert first["level"] == "info" and first["logger"] == "some.service"
    assert first["peer"] == "127.0.0.1:1" and first["n"] == 3
    assert first["time"].endswith("+00:00")
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)


def test_nngstream_logs_the_same_shape(spawn):
    """The buffer (no service plumbing of its own) logs through certified.logs."""
    p_in, p_out = free_port(), free_port()
    buf = spawn(
        ["nngstream", f"tcp://127.0.0.1:{p_in}", f"tcp://127.0.0.1:{p_out}", "-v"]
        + ["--metrics-interval", "0.1"],
        name="buf",
    )
    wait_until(buf.stdout, 20, "the buffer's first metrics line (it is running)")
    buf.signal(signal.SIGTERM)  # logs its state changes while it drains and stops
    buf.wait(30)
    lines = [json.loads(line) for line in buf.stderr().splitlines()]
    assert lines, "the buffer logged nothing"
    for line in lines:
        assert set(line) >= SHAPE, line
        assert line["time"].endswith("+00:00")

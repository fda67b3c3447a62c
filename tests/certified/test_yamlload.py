"""The one YAML loader: alias bombs and recursive aliases refused, errors located, and
every command that reads YAML uses it (lclstreamer, psik, psik-api, message)."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from certified.yamlload import MAX_NODES, YamlError, load_document, load_yaml

pytestmark = pytest.mark.timeout(60)

# "Billion laughs": 306 bytes whose aliases expand to 9**9 (387 million) strings.
BOMB = """\
a: &a [l,l,l,l,l,l,l,l,l]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
MEMORY_LIMIT = 1 << 30  # 1 GiB of address space: the old loader needed 5.8 GB


def test_alias_bomb_is_refused_naming_the_file():
    with pytest.raises(YamlError, match=r"^bomb\.yaml: refused: .* more than 100000 nodes"):
        load_yaml(BOMB, "bomb.yaml")


def test_recursive_alias_is_refused():
    with pytest.raises(YamlError, match=r"^x\.yaml: refused: an alias .* refers to itself"):
        load_yaml("a: &a [1, *a]\n", "x.yaml")


def test_ordinary_aliases_and_documents_load():
    assert load_yaml("base: &b {n: 1}\nuse: *b\nlist: [*b, *b]\n", "ok.yaml") == {
        "base": {"n": 1},
        "use": {"n": 1},
        "list": [{"n": 1}, {"n": 1}],
    }
    assert load_yaml("", "empty.yaml") is None
    # The bound is on the expansion: a wide but honest document is fine.
    wide = "x: &x [" + ",".join(["1"] * 1000) + "]\ny: [" + ",".join(["*x"] * 90) + "]\n"
    assert len(load_yaml(wide, "wide.yaml")["y"]) == 90
    too_wide = wide.replace(",".join(["*x"] * 90), ",".join(["*x"] * (MAX_NODES // 1000)))
    with pytest.raises(YamlError, match="alias bomb"):
        load_yaml(too_wide, "wide.yaml")


def test_errors_are_located():
    with pytest.raises(YamlError, match=r"^bad\.yaml: line 3, column 1: invalid YAML: "):
        load_yaml("a: [1,\n  2\n", "bad.yaml")
    with pytest.raises(YamlError, match=r"^bad\.json: line 2, column 1: invalid JSON: "):
        load_document('{"a": 1,\n}', "bad.json")
    with pytest.raises(YamlError, match="invalid YAML"):
        load_yaml("!!python/object:os.system {}\n", "evil.yaml")  # safe types only


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    """Run a command with at most 1 GiB of address space (and the test's timeout)."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=30, cwd=cwd, preexec_fn=_limited
    )


@pytest.mark.timeout(10)
def test_lclstreamer_validate_refuses_the_bomb_quickly(tmp_path):
    """Fails fast (10 s test timeout; it took 46 s) and small (1 GiB; it took 5.8 GB)."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    out = _run([sys.executable, "-m", "lclstreamer.cli", "--validate", "-c", str(bomb)], tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (
        f"lclstreamer: error: {bomb}: refused: its aliases (*name) expand to more than"
        f" {MAX_NODES} nodes (a YAML alias bomb?)"
    )


@pytest.mark.timeout(20)
def test_psik_psik_api_and_message_refuse_the_bomb(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    config = tmp_path / "psik.yaml"
    config.write_text(f"prefix: {tmp_path / 'jobs'}\n")
    for prog, args in (
        ("psik", ["-m", "psik.cli", "--config", str(config), "run", str(bomb)]),
        ("psik", ["-m", "psik.cli", "--config", str(bomb), "ls"]),
        ("psik-api", ["-m", "psik.api.cli", "serve", "--config", str(bomb)]),
        ("message", ["-m", "certified.message", "https://127.0.0.1:1/", "--yaml", str(bomb)]),
    ):
        out = _run([sys.executable, *args], tmp_path)
        assert out.returncode == 2, (prog, out.stderr)
        assert out.stderr.startswith(f"{prog}: error: {bomb}: refused: ")
        assert "alias bomb" in out.stderr and "Traceback" not in out.stderr

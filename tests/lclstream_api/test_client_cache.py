"""The client cache on real lclstreamer batches: entries appear whole or not at all,
every batch is checked, and broken entries, unknown keys and unusable directories are
one clear line (the permission cases as a real unprivileged UNIX user)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lclstream_api.client import CacheError, decoder_for, stream
from lclstream_api.client.cache import MANIFEST, Cache

pytestmark = pytest.mark.timeout(120)


def fill(cache: Cache, made, key: str = "k" * 64):
    dec = decoder_for(made.config)
    w = cache.writer(key, server="https://x#pin", version="1", config=made.config,
                     serializer="hdf5")  # fmt: skip
    for f in made.files:
        data = f.read_bytes()
        w.add(data, dec(memoryview(data)))
    return w


def cache_cmd(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "lclstream_api.client.cli", "cache", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_an_entry_appears_only_on_commit_and_replays_checked(tmp_path, made):
    m = made["hdf5"]
    cache = Cache(tmp_path / "c")
    w = fill(cache, m)
    assert cache.entry_keys() == [] and cache.load("k" * 64) is None  # not yet an entry
    entry = w.commit("T1")
    assert [p.name for p in cache.root.iterdir()] == ["k" * 64]  # the temp dir was renamed
    assert entry.manifest.events == 24 and len(entry.manifest.batches) == 6
    direct = {int(i): ev for f in m.files
              for ev in decoder_for(m.config)(memoryview(f.read_bytes())).events()
              for i in [ev["index"]]}  # fmt: skip
    replayed = [b for b in cache.replay(entry, decoder_for(m.config))]
    assert [b.key for b in replayed] == sorted(b.key for b in replayed)  # (rank, seq) order
    for b in replayed:
        for ev in b.events():
            np.testing.assert_array_equal(ev["frames"], direct[int(ev["index"])]["frames"])
    aborted = fill(cache, m, "a" * 64)
    aborted.abort()
    assert cache.entry_keys() == ["k" * 64] and len(list(cache.root.iterdir())) == 1


def test_broken_entries_are_named(tmp_path, made):
    cache = Cache(tmp_path / "c")
    entry = fill(cache, made["hdf5"]).commit("T1")
    good = fill(cache, made["hdf5"], "g" * 64).commit("T2")
    recs = entry.manifest.batches
    (entry.path / recs[0].file).unlink()
    (entry.path / recs[1].file).write_bytes(b"short")
    got = cache_cmd("verify", "--cache", str(cache.root))
    assert got.returncode == 1
    assert f"{entry.path / recs[0].file}: cannot read: No such file" in got.stdout
    assert f"{entry.path / recs[1].file}: 5 bytes, the manifest says {recs[1].bytes}" in got.stdout
    assert f"{good.key}: ok (6 batches)" in got.stdout
    with pytest.raises(CacheError, match="cannot read: No such file"):
        list(cache.replay(entry, decoder_for(made["hdf5"].config)))

    text = (good.path / MANIFEST).read_text()
    (good.path / MANIFEST).write_text(text[: len(text) // 2])  # truncated
    with pytest.raises(CacheError, match=f"{good.path / MANIFEST}: truncated or invalid"):
        cache.load(good.key)
    listed = cache_cmd("ls", "--cache", str(cache.root))
    assert listed.returncode == 0 and "unreadable: " in listed.stdout
    assert f"remove the entry: lclstream cache rm {good.key}" in listed.stdout
    assert cache_cmd("verify", good.key[:8], "--cache", str(cache.root)).returncode == 1
    removed = cache_cmd("rm", good.key[:8], "--cache", str(cache.root))
    assert removed.returncode == 0 and not good.path.exists()


def test_unknown_and_ambiguous_keys(tmp_path, made):
    cache = Cache(tmp_path / "c")
    fill(cache, made["hdf5"], "ab" + "0" * 62).commit("T1")
    fill(cache, made["hdf5"], "ac" + "0" * 62).commit("T2")
    for args, msg in [(("rm", "nope"), "no cache entries match 'nope'"),
                      (("verify", "a"), "2 cache entries match 'a'"),
                      (("rm", ""), "no cache entries match ''")]:  # fmt: skip
        got = cache_cmd(*args, "--cache", str(cache.root))
        assert (
            got.returncode == 1 and got.stderr.strip() == f"lclstream: error: {msg} in {cache.root}"
        )
    empty = cache_cmd("ls", "--cache", str(tmp_path / "none"))
    assert empty.returncode == 0 and "0 entries" in empty.stderr


def test_stream_refuses_an_unusable_cache_before_asking_the_server(pki, tmp_path, made):
    pki.add_service(pki.client, "lclstream", "https://127.0.0.1:9")  # nothing listens
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CacheError, match=f"cache {blocker / 'c'}: not writable"):
        stream(made["hdf5"].config, certified=pki.client, cache=blocker / "c")


@pytest.fixture
def open_dir():
    """A folder under /tmp every user can reach (pytest's tmp_path is root's, 0700)."""
    root = Path(tempfile.mkdtemp(prefix="lclstream-cache-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_permissions_as_an_unprivileged_user(open_dir, made):
    """A cache owned by someone else: a user cannot store into it or remove from it, and
    is told so in one line (no traceback)."""
    from tests.support.users import require_user_admin, shared_python, unix_users

    require_user_admin()
    tmp_path = open_dir
    python = shared_python(tmp_path)
    cache = Cache(tmp_path / "c")
    entry = fill(cache, made["hdf5"]).commit("T1")
    for p in (tmp_path, cache.root, entry.path):
        p.chmod(0o755)
    with unix_users("lcltcache") as users:
        user = str(users["lcltcache"].pw_uid)
        base = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                str(python)]  # fmt: skip
        probe = "from lclstream_api.client.cache import Cache; import sys; " \
                "Cache(sys.argv[1]).check_writable()"  # fmt: skip
        got = subprocess.run([*base, "-c", probe, str(cache.root)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert got.returncode == 1 and f"cache {cache.root}: not writable (Permission denied)" \
            in got.stderr  # fmt: skip
        rm = subprocess.run([*base, "-m", "lclstream_api.client.cli", "cache", "rm",
                             entry.key, "--cache", str(cache.root)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
        assert rm.returncode == 1, rm.stderr
        assert rm.stderr.strip().splitlines()[-1].startswith(f"lclstream: error: {entry.path}")
        assert "Permission denied" in rm.stderr and "Traceback" not in rm.stderr
    assert json.loads((entry.path / MANIFEST).read_text())["key"] == entry.key

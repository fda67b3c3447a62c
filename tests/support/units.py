"""Run systemd service units without systemd: a `systemctl` for machines (containers, CI)
whose PID 1 is not systemd, so a test can start and stop the very unit files an operator
installs.

What is honoured: `User=`, `Group=`, `Environment=` (repeatable, quoted assignments),
`WorkingDirectory=` (default `/`), `ExecStart=` (one command, no shell), `RuntimeDirectory=`
and `RuntimeDirectoryMode=` (created under `runtime_root`, owned by `User=`), `KillMode=`,
`KillSignal=` and `TimeoutStopSec=`. The unit's control group is emulated by the main
process's descendants at the moment `stop` begins: `control-group` signals them all,
`mixed` sends `KillSignal` to the main process and then SIGKILL to every one left,
`process` signals the main process only and leaves the rest running (as systemd does).
Sandboxing (`ProtectSystem=`, `ReadWritePaths=`, `NoNewPrivileges=`, `PrivateTmp=`) and
restart policies are not emulated. The environment starts from systemd's default PATH,
as a system manager's does.

CLI (what a guide's `systemctl` calls become):
  python -m tests.support.units --units DIR --state DIR --runtime-root DIR \\
      {daemon-reload | enable [--now] U... | start U... | stop U... | restart U... |
       is-active U...}
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

#: systemd's PATH for system services.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class UnitError(Exception):
    """A unit file this runner cannot run, or a unit that did not start or stop."""


@dataclass
class Unit:
    """The [Service] settings of one unit file this runner honours."""

    name: str
    exec_start: list[str]
    user: str | None = None
    group: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    working_directory: str = "/"
    runtime_directories: list[str] = field(default_factory=list)
    runtime_directory_mode: int = 0o755
    kill_mode: str = "control-group"
    kill_signal: int = signal.SIGTERM
    timeout_stop: float = 90.0


def _seconds(text: str) -> float:
    text = text.strip()
    if text.endswith("min"):
        return float(text[:-3]) * 60
    if text.endswith("s"):
        return float(text[:-1])
    return float(text)


def parse_unit(path: Path) -> Unit:
    """Read a unit file's [Service] section (repeated keys kept in order)."""
    section, entries = "", []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if "=" not in line:
            raise UnitError(f"{path}:{lineno}: not KEY=VALUE: {line!r}")
        key, value = line.split("=", 1)
        if section == "Service":
            entries.append((key.strip(), value.strip()))
    unit = Unit(name=path.stem, exec_start=[])
    for key, value in entries:
        if key == "ExecStart":
            if value[:1] in "-@:+!":
                raise UnitError(f"{path}: ExecStart prefix {value[0]!r} is not supported")
            unit.exec_start = shlex.split(value)
        elif key == "User":
            unit.user = value
        elif key == "Group":
            unit.group = value
        elif key == "Environment":
            for assignment in shlex.split(value):
                name, _, val = assignment.partition("=")
                unit.environment[name] = val
        elif key == "WorkingDirectory":
            unit.working_directory = value
        elif key == "RuntimeDirectory":
            unit.runtime_directories += value.split()
        elif key == "RuntimeDirectoryMode":
            unit.runtime_directory_mode = int(value, 8)
        elif key == "KillMode":
            unit.kill_mode = value
        elif key == "KillSignal":
            unit.kill_signal = signal.Signals[value if value.startswith("SIG") else f"SIG{value}"]
        elif key == "TimeoutStopSec":
            unit.timeout_stop = _seconds(value)
    if not unit.exec_start:
        raise UnitError(f"{path}: no ExecStart=")
    if unit.kill_mode not in ("control-group", "mixed", "process"):
        raise UnitError(f"{path}: KillMode={unit.kill_mode} is not supported here")
    return unit


class Manager:
    """Starts and stops units from `units_dir`; main pids and output live in `state_dir`."""

    def __init__(self, units_dir: Path, state_dir: Path, runtime_root: Path) -> None:
        self.units_dir, self.state_dir, self.runtime_root = units_dir, state_dir, runtime_root
        state_dir.mkdir(parents=True, exist_ok=True)

    def unit(self, name: str) -> Unit:
        path = self.units_dir / (name if name.endswith(".service") else f"{name}.service")
        if not path.is_file():
            raise UnitError(f"Unit {path.name} not found in {self.units_dir}")
        return parse_unit(path)

    def _pidfile(self, unit: Unit) -> Path:
        return self.state_dir / f"{unit.name}.pid"

    def main_pid(self, unit: Unit) -> int | None:
        try:
            pid = int(self._pidfile(unit).read_text())
            proc = psutil.Process(pid)
            return None if proc.status() == psutil.STATUS_ZOMBIE else pid
        except (FileNotFoundError, ValueError, psutil.Error):
            return None

    def start(self, unit: Unit) -> int:
        if (pid := self.main_pid(unit)) is not None:
            return pid
        uid = gid = None
        home = "/"
        if unit.user is not None:
            pw = pwd.getpwnam(unit.user)
            uid, gid, home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        if unit.group is not None:
            import grp

            gid = grp.getgrnam(unit.group).gr_gid
        for name in unit.runtime_directories:
            path = self.runtime_root / name
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(unit.runtime_directory_mode)
            if uid is not None:
                os.chown(path, uid, gid if gid is not None else -1)
        env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
        if unit.user is not None:
            env |= {"USER": unit.user, "LOGNAME": unit.user, "HOME": home}
        env |= unit.environment
        out = open(self.state_dir / f"{unit.name}.log", "ab")  # noqa: SIM115 (the child's)
        try:
            proc = subprocess.Popen(
                unit.exec_start,
                cwd=unit.working_directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=[] if uid is not None else None,
            )
        except OSError as exc:
            raise UnitError(f"{unit.name}: cannot start {unit.exec_start[0]}: {exc}") from None
        finally:
            out.close()
        self._pidfile(unit).write_text(str(proc.pid))
        return proc.pid

    def stop(self, unit: Unit) -> None:
        pid = self.main_pid(unit)
        if pid is None:
            self._pidfile(unit).unlink(missing_ok=True)
            return
        main = psutil.Process(pid)
        group = [main, *main.children(recursive=True)]  # the emulated control group
        first = group if unit.kill_mode == "control-group" else [main]
        for proc in first:
            _signal(proc, unit.kill_signal)
        _, alive = psutil.wait_procs([main], timeout=unit.timeout_stop)
        left = [main] if unit.kill_mode == "process" else group
        for proc in left:
            _signal(proc, signal.SIGKILL)
        psutil.wait_procs(left, timeout=10)
        self._pidfile(unit).unlink(missing_ok=True)
        for name in unit.runtime_directories:
            _remove_tree(self.runtime_root / name)
        what = f"{unit.name}: {unit.kill_signal.name} to main process {pid}"
        if alive:
            what += f", which ignored it for {unit.timeout_stop:g} s"
        others = len(group) - 1
        if unit.kill_mode == "process":
            what += f"; left running: {others} other process(es) of the unit"
        else:
            what += f"; SIGKILL to the {others} other process(es) of the unit"
        print(what)

    def logs(self, name: str) -> str:
        path = self.state_dir / f"{self.unit(name).name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _signal(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="systemctl (tests.support.units)")
    parser.add_argument("--units", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--runtime-root", type=Path, required=True)
    parser.add_argument("command")
    parser.add_argument("names", nargs="*")
    parser.add_argument("--now", action="store_true")
    args = parser.parse_intermixed_args(argv)
    manager = Manager(args.units, args.state, args.runtime_root)
    try:
        units = [manager.unit(n) for n in args.names]
        if args.command == "daemon-reload":
            return 0
        if args.command in ("start", "enable", "restart"):
            if args.command == "restart":
                for unit in units:
                    manager.stop(unit)
            if args.command != "enable" or args.now:
                for unit in units:
                    manager.start(unit)
            return 0
        if args.command == "stop":
            for unit in reversed(units):
                manager.stop(unit)
            return 0
        if args.command == "is-active":
            inactive = [u.name for u in units if manager.main_pid(u) is None]
            print("\n".join("inactive" if u.name in inactive else "active" for u in units))
            return 3 if inactive else 0
    except UnitError as exc:
        print(f"systemctl: {exc}", file=sys.stderr)
        return 1
    print(f"systemctl: unknown command {args.command!r}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

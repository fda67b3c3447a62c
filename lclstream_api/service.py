"""The service's I/O around the pure state machine: provisioning (ports, jobs), applying
events under one lock, running the actions, and the reconciler that polls the jobs."""

from __future__ import annotations

import json
import logging
import secrets
import shlex
import socket
import threading
import time
import uuid
from typing import Any

import yaml

from psik.models import JobSpec, ResourceSpec

from .launcher import JobLauncher, LaunchError
from .machine import step
from .metrics import ApiMetrics
from .models import (
    CancelJobs,
    CancelRequested,
    Event,
    JobSeen,
    MetricsSeen,
    ProvisionFailed,
    ReleasePorts,
    Tick,
    Transfer,
    TransferRequest,
)
from .settings import ApiSettings
from .store import PortsExhausted, Store

log = logging.getLogger("lclstream_api")


class LimitExceeded(Exception):
    pass


class NoPorts(Exception):
    pass


def port_free(host: str, port: int) -> bool:
    """Whether `port` can be bound on `host` now."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _completed_now(old: Transfer, new: Transfer, role: str) -> bool:
    """Whether `role`'s job became completed with this step (true once per job)."""
    before, after = old.jobs.get(role), new.jobs.get(role)
    was = before is not None and before.state == "completed"
    return after is not None and after.state == "completed" and not was


def producer_ranks(ranks: int, buffers: int) -> list[int]:
    """How many ranks dial each buffer (rank r dials buffer r mod K)."""
    return [len(range(k, ranks, buffers)) for k in range(buffers)]


class Service:
    def __init__(
        self, settings: ApiSettings, launcher: JobLauncher, store: Store, metrics: ApiMetrics
    ) -> None:
        self.settings = settings
        self.launcher = launcher
        self.store = store
        self.metrics = metrics
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retiring: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reconciler; buffers waiting to be retired are cancelled now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        for th in self._retiring:
            th.join(30)
        self.launcher.close()

    def _loop(self) -> None:
        while True:
            try:
                self.reconcile_once()
            except Exception:  # a pass that failed is logged; the next one tries again
                log.exception("reconciler pass failed")
                self.metrics.reconciler_error("pass")
            if self._stop.wait(self.settings.reconcile_interval):
                return

    # -- events --------------------------------------------------------------------------
    def apply(self, transfer_id: str, event: Event) -> Transfer | None:
        """Step the transfer with `event`, persist it, then run the actions."""
        if isinstance(event, JobSeen) and event.state == "failed":
            live = self.store.get(transfer_id)
            if live is not None and live.state.live:
                event = event.model_copy(update={"info": self._why(event)})
        with self.lock:
            cur = self.store.get(transfer_id)
            if cur is None:
                return None
            new, actions = step(cur, event)
            if new != cur:
                self.store.save(new)
            if isinstance(event, MetricsSeen):
                self.metrics.buffer_report(cur.metrics.get(event.role), event.metrics)
            producer_done = _completed_now(cur, new, "producer")
            if new.state != cur.state:
                log.info(
                    "transfer %s: %s -> %s (%s) %s",
                    transfer_id,
                    cur.state.value,
                    new.state.value,
                    event.source,
                    new.reason,
                )
        for action in actions:
            if isinstance(action, CancelJobs):
                self._cancel(transfer_id, action.jobids)
                if action.after_grace:
                    th = threading.Thread(
                        target=self._retire,
                        args=(transfer_id, action.after_grace),
                        name="retire-buffers",
                        daemon=True,
                    )
                    self._retiring.append(th)
                    th.start()
            elif isinstance(action, ReleasePorts):
                self.store.release(transfer_id)
        if producer_done:
            self._count_events(transfer_id, new.jobs["producer"].jobid)
        return new

    def _count_events(self, transfer_id: str, jobid: str) -> None:
        """Count the events of a completed producer job from its summary (the last JSON
        line of its stdout, rank 0's report); a job without one is logged, not counted."""
        for line in reversed(self._read_log(jobid, "stdout").splitlines()):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("events"), int):
                skipped = doc.get("skipped")
                self.metrics.producer_summary(
                    doc["events"], skipped if isinstance(skipped, int) else 0
                )
                return
        log.warning("transfer %s: producer job %s printed no summary", transfer_id, jobid)

    def _cancel(self, transfer_id: str, jobids: list[str]) -> None:
        for jobid in jobids:
            try:
                self.launcher.cancel(jobid)
            except LaunchError as exc:
                log.warning("transfer %s: %s", transfer_id, exc)

    def _retire(self, transfer_id: str, jobids: list[str]) -> None:
        """Give buffers `cancel_grace` seconds to end their stream (consumers get the end
        message once the producers are gone), then cancel those still running."""
        deadline = time.monotonic() + self.settings.cancel_grace
        left = list(jobids)
        while left and time.monotonic() < deadline and not self._stop.is_set():
            still = []
            for jobid in left:
                try:
                    state, _ = self.launcher.state(jobid)
                except LaunchError:
                    state = "active"
                if state in ("new", "queued", "active"):
                    still.append(jobid)
            left = still
            if left:
                self._stop.wait(0.5)
        self._cancel(transfer_id, left)

    def _read_log(self, jobid: str, stream: str, limit: int = 1 << 22) -> bytes:
        """A job's log (its first `limit` bytes); what could not be read is logged."""
        chunks, offset = [], 0
        try:
            while offset < limit:
                data, offset = self.launcher.log(jobid, stream, offset)
                if not data:
                    break
                chunks.append(data)
        except LaunchError as exc:
            log.warning("job %s: %s", jobid, exc)
        return b"".join(chunks)

    def _why(self, ev: JobSeen) -> str:
        """A failed job's info and the last line of its stderr (the program's own error)."""
        text = self._read_log(ev.jobid, "stderr").decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else ""
        return "; ".join(x for x in (ev.info, last) if x)

    def reconcile_once(self) -> None:
        """Feed every live transfer's job states and the clock to the state machine."""
        for tid in self.store.live():
            t = self.store.get(tid)
            if t is None:
                continue
            for role, job in list(t.jobs.items()):
                try:
                    state, info = self.launcher.state(job.jobid)
                except LaunchError as exc:
                    log.warning("transfer %s: %s", tid, exc)
                    self.metrics.reconciler_error("job_state")
                    continue
                ev = JobSeen(
                    role=role,
                    jobid=job.jobid,
                    state=state,
                    info=info,
                    source="reconciler",
                    time=time.time(),
                )
                self.apply(tid, ev)
            self.apply(tid, Tick(time=time.time()))

    def cancel(self, transfer_id: str) -> Transfer | None:
        return self.apply(transfer_id, CancelRequested(time=time.time()))

    # -- provisioning --------------------------------------------------------------------
    def create(self, owner: str, req: TransferRequest, config: dict[str, Any]) -> Transfer:
        """Lease ports, record the transfer, submit the buffer and producer jobs.

        `config` is the validated native lclstreamer configuration without handlers.
        A failure half-way is compensated by the state machine (ProvisionFailed)."""
        s, o = self.settings, req.options
        if o.producers > s.limits.max_producers:
            raise LimitExceeded(f"options.producers {o.producers} > {s.limits.max_producers}")
        if o.buffers > s.limits.max_buffers:
            raise LimitExceeded(f"options.buffers {o.buffers} > {s.limits.max_buffers}")
        if o.buffers > o.producers:
            raise LimitExceeded(f"options.buffers {o.buffers} > options.producers {o.producers}")
        tid = uuid.uuid4().hex[:16]
        now = time.time()
        with self.lock:
            live = len(self.store.live(owner))
            if live >= s.limits.max_live_transfers:
                raise OverflowError(
                    f"{owner} has {live} live transfers (limit {s.limits.max_live_transfers})"
                )
            lo, hi = s.port_range
            try:
                ports = self.store.lease(
                    tid, 2 * o.buffers, range(lo, hi + 1), lambda p: port_free(s.bind_host, p)
                )
            except PortsExhausted as exc:
                raise NoPorts(f"no free ports in the range {lo}-{hi}: {exc}") from None
            roles = ["producer", *(f"buffer-{k}" for k in range(o.buffers))]
            host = s.advertise_host
            t = Transfer(
                id=tid,
                owner=owner,
                created=now,
                updated=now,
                options=o,
                roles=roles,
                ports=ports,
                urls=[f"tcp://{host}:{ports[2 * k + 1]}" for k in range(o.buffers)],
            )
            secret = secrets.token_hex(32)
            self.store.save(t, secret=secret)
        log.info(
            "transfer %s created by %s: %d ranks, %d buffers", tid, owner, o.producers, o.buffers
        )
        try:
            for k, n in enumerate(producer_ranks(o.producers, o.buffers)):
                spec = self._buffer_spec(t, k, n, secret)
                self._submitted(t, f"buffer-{k}", self.launcher.submit(spec, owner))
            spec = self._producer_spec(t, config, secret)
            self._submitted(t, "producer", self.launcher.submit(spec, owner))
        except LaunchError as exc:
            self.apply(tid, ProvisionFailed(reason=str(exc), time=time.time()))
        return self.store.get(tid) or t

    def _submitted(self, t: Transfer, role: str, jobid: str) -> None:
        ev = JobSeen(role=role, jobid=jobid, state="queued", source="service", time=time.time())
        self.apply(t.id, ev)

    def _callback(self, t: Transfer, role: str) -> str | None:
        base = self.settings.callback_base
        if base is None or not self.launcher.callbacks:
            return None
        return f"{base.rstrip('/')}/callbacks/{t.id}/{role}"

    def _buffer_spec(self, t: Transfer, k: int, ranks: int, secret: str) -> JobSpec:
        s, o = self.settings, t.options
        in_port, out_port = t.ports[2 * k], t.ports[2 * k + 1]
        args = [
            "nngstream",
            f"tcp://{s.bind_host}:{in_port}",
            f"tcp://{s.bind_host}:{out_port}",
            "--out-proto",
            o.protocol.value,
            "--producers",
            str(ranks),
            "--delivery",
            o.delivery.value,
            "--max-bytes",
            str(o.max_buffer_bytes),
            "--when-full",
            o.when_full.value,
            "--metrics-interval",
            str(s.metrics_interval),
        ]
        env: dict[str, str] = {}
        cb = self._callback(t, f"buffer-{k}")
        if cb is not None and s.job_identity is not None:
            args += ["--callback", cb, "--certified-config", str(s.job_identity)]
            env["NNGSTREAM_CB_SECRET"] = secret
        return self._spec(t, f"buffer-{k}", shlex.join(args), 1, env, secret)

    def _producer_spec(self, t: Transfer, config: dict[str, Any], secret: str) -> JobSpec:
        s, o = self.settings, t.options
        in_urls = [f"tcp://{s.advertise_host}:{t.ports[2 * k]}" for k in range(o.buffers)]
        handler = {"type": "nng_push", "urls": in_urls, "mode": "dial", "distribute": True}
        text = yaml.safe_dump({**config, "data_handlers": [handler]}, sort_keys=False)
        script = (
            "cat > stream.yaml <<'LCLSTREAM_CONFIG_END'\n"
            f"{text}LCLSTREAM_CONFIG_END\n"
            f'"$mpirun" -n {o.producers} lclstreamer -c stream.yaml --no-progress\n'
        )
        return self._spec(t, "producer", script, o.producers, {}, secret, o.backend)

    def _spec(
        self,
        t: Transfer,
        role: str,
        script: str,
        procs: int,
        env: dict[str, str],
        secret: str,
        backend: str = "default",
    ) -> JobSpec:
        cb = self._callback(t, role)
        return JobSpec(
            name=f"lclstream-{t.id}-{role}",
            script=script,
            environment={**self.settings.job_environment, **env},
            resources=ResourceSpec(duration=t.options.duration, process_count=procs),
            backend=backend,
            callback=cb,
            cb_secret=secret if cb else None,
        )

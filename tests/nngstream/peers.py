"""Test producers and consumers for nngstream, run as subprocesses.

    python peers.py produce URL --id P --count N [--proto nng|zmq] [--sizes mixed|SIZE]
    python peers.py consume URL --out FILE [--proto nng|zmq] [--delay S] [--acked]

A message is a 16-byte header `<IQI` (producer, sequence, size) followed by filler
bytes derived from (producer, sequence), so a consumer can check each one. Producers
print `sent K` lines as they go and `done K` at the end; consumers print `got K` lines
and write a JSON record of everything they received (in arrival order) and the end
message at end of stream; a consumer that loses the buffer without an end message
writes its record with eos "broken" and exits 3. The consumer is written against the
public pynng/pyzmq APIs and the documented end message only (an independent reader of
the stream contract); the producer uses nngstream's NNG outlet to know when its last
message has been written before it closes.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import threading
import time

HEADER = struct.Struct("<IQI")
END_PREFIX = b"\x00NNGSTREAM\x00"  # docs/nngstream.md, "End of stream"
BROKEN = 3
KIB, MIB = 1024, 1024 * 1024
# 1 KiB .. 8 MiB, mostly small: 200 entries, mean about 230 KiB.
MIXED = [1 * KIB] * 70 + [16 * KIB] * 50 + [128 * KIB] * 45 + [1 * MIB] * 32 + [8 * MIB] * 3


def size_of(producer: int, seq: int, sizes: str) -> int:
    if sizes == "mixed":
        return MIXED[(seq * 37 + producer * 11) % len(MIXED)]
    return int(sizes)


def filler(producer: int, seq: int) -> int:
    return (producer * 131 + seq * 7) % 251


def make(producer: int, seq: int, size: int) -> bytes:
    head = HEADER.pack(producer, seq, size)
    return head + bytes([filler(producer, seq)]) * (size - HEADER.size)


def check(data: bytes) -> tuple[int, int, int]:
    """(producer, seq, size) of a message, or ValueError if it is damaged."""
    if len(data) < HEADER.size:
        raise ValueError(f"short message ({len(data)} bytes)")
    producer, seq, size = HEADER.unpack_from(data)
    want = filler(producer, seq)
    if size != len(data) or data[HEADER.size] != want or data[-1] != want:
        raise ValueError(f"damaged message p={producer} seq={seq} len={len(data)} size={size}")
    return producer, seq, size


def produce(args: argparse.Namespace) -> None:
    if args.proto == "zmq":
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 4)
        sock.connect(args.url)
        for seq in range(args.count):
            sock.send(make(args.id, seq, size_of(args.id, seq, args.sizes)), copy=False)
            if seq % 50 == 49:
                print(f"sent {seq + 1}", flush=True)
            if args.delay:
                time.sleep(args.delay)
        sock.close(linger=-1)  # libzmq flushes everything queued before the context ends
        ctx.term()
    else:
        from nngstream.nngio import NngOutlet, new_message

        out = NngOutlet(args.url, dial=True, dial_timeout=20.0, on_change=lambda: None)
        for seq in range(args.count):
            data = make(args.id, seq, size_of(args.id, seq, args.sizes))
            msg, view = new_message(len(data))
            view[:] = data
            del view
            while not out.send(msg):
                pass
            if seq % 50 == 49:
                print(f"sent {seq + 1}", flush=True)
            if args.delay:
                time.sleep(args.delay)
        out.finish(args.count, 5.0, threading.Event(), lambda: None)
        out.close()
    print(f"done {args.count}", flush=True)


def end_message(data: bytes) -> dict | None:
    if data[: len(END_PREFIX)] != END_PREFIX:
        return None
    return json.loads(data[len(END_PREFIX) :])


def consume_acked(args: argparse.Namespace) -> int:
    """The acked protocol of docs/nngstream.md with a plain Pair1 socket: credit 2, a
    16-byte envelope (producer, sequence) before each payload, one ack per message once
    processed (then `acked P S` is printed), duplicates dropped by (producer, sequence)."""
    import pynng

    envelope = struct.Struct("<QQ")
    live: set[int] = set()
    seen_peer = threading.Event()

    def added(pipe: pynng.Pipe) -> None:
        live.add(pipe.id)
        seen_peer.set()

    sock = pynng.Pair1(recv_max_size=0, recv_timeout=200)
    sock.add_post_pipe_connect_cb(added)
    sock.add_post_pipe_remove_cb(lambda pipe: live.discard(pipe.id))
    sock.dial(args.url, block=True)
    sock.send(END_PREFIX + json.dumps({"type": "credit", "credit": 2}).encode())
    received: list[tuple[int, int]] = []
    keys: set[tuple[int, int]] = set()
    duplicates, nbytes, eos, end = 0, 0, None, None
    while True:
        try:
            data = sock.recv()
        except pynng.Timeout:
            if seen_peer.is_set() and not live:
                eos = "broken"
                break
            continue
        if (end := end_message(data)) is not None:
            eos = "end"
            break
        producer, seq = envelope.unpack_from(data)
        if args.delay:
            time.sleep(args.delay)
        if (producer, seq) in keys:
            duplicates += 1
        else:
            _p, s, n = check(data[envelope.size :])
            keys.add((producer, seq))
            received.append((_p, s))
            nbytes += n
        sock.send(END_PREFIX + json.dumps({"type": "ack", "n": 1}).encode())
        print(f"acked {received[-1][0]} {received[-1][1]}", flush=True)
        print(f"got {len(received)}", flush=True)
    sock.close()
    with open(args.out, "w") as f:
        json.dump(
            {"received": received, "bytes": nbytes, "eos": eos, "end": end,
             "duplicates": duplicates}, f,
        )  # fmt: skip
    print("eos", eos, flush=True)
    return BROKEN if eos == "broken" else 0


def consume(args: argparse.Namespace) -> int:
    if args.acked:
        return consume_acked(args)
    received: list[tuple[int, int]] = []
    nbytes = 0
    eos = None
    end = None
    if args.proto == "zmq":
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, 4)
        sock.connect(args.url)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        connected, seen = 0, False
        while True:
            ready = dict(poller.poll(200))
            if monitor in ready:
                from zmq.utils.monitor import recv_monitor_message

                ev = recv_monitor_message(monitor)["event"]
                connected += 1 if ev == zmq.EVENT_HANDSHAKE_SUCCEEDED else -1
                seen = True
            if sock not in ready:
                if seen and connected <= 0 and monitor not in ready:
                    eos = "broken"
                    break
                continue
            data = sock.recv()
            if not data:
                eos = "empty-frame"
                break
            if (end := end_message(data)) is not None:
                eos = "end"
                break
            p, s, n = check(data)
            received.append((p, s))
            nbytes += n
            print(f"got {len(received)}", flush=True)
            if args.delay:
                time.sleep(args.delay)
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
        ctx.term()
    else:
        import pynng

        live: set[int] = set()
        seen = threading.Event()

        def added(pipe: pynng.Pipe) -> None:
            live.add(pipe.id)
            seen.set()

        sock = pynng.Pull0(recv_max_size=0, recv_timeout=200, recv_buffer_size=1)
        sock.add_post_pipe_connect_cb(added)
        sock.add_post_pipe_remove_cb(lambda pipe: live.discard(pipe.id))
        sock.dial(args.url, block=False)
        while True:
            gone = seen.is_set() and not live
            try:
                data = sock.recv()
            except pynng.Timeout:
                if gone:
                    eos = "broken"
                    break
                continue
            if (end := end_message(data)) is not None:
                eos = "end"
                break
            p, s, n = check(data)
            received.append((p, s))
            nbytes += n
            print(f"got {len(received)}", flush=True)
            if args.delay:
                time.sleep(args.delay)
        sock.close()
    with open(args.out, "w") as f:
        json.dump({"received": received, "bytes": nbytes, "eos": eos, "end": end}, f)
    print("eos", eos, flush=True)
    return BROKEN if eos == "broken" else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce")
    p.add_argument("url")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--sizes", default="mixed")
    p.add_argument("--proto", default="nng")
    p.add_argument("--delay", type=float, default=0.0)
    c = sub.add_parser("consume")
    c.add_argument("url")
    c.add_argument("--out", required=True)
    c.add_argument("--proto", default="nng")
    c.add_argument("--delay", type=float, default=0.0)
    c.add_argument("--acked", action="store_true", help="speak the acked protocol")
    args = ap.parse_args()
    return produce(args) if args.cmd == "produce" else consume(args)


if __name__ == "__main__":
    sys.exit(main())

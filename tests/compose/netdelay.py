#!/usr/bin/env python3
"""Delays and drops the packets one network namespace sends, for kernels without sch_netem.

Run inside the namespace (`nsenter -t PID -n tests/compose/netdelay.py ...`), after
`iptables -I OUTPUT -o eth0 -j NFQUEUE --queue-num N --queue-bypass` there: the kernel hands every
packet leaving eth0 to this program (NFQUEUE, over netlink), which drops it with probability
--loss, or lets it go --delay-ms +- --jitter-ms (uniform) later, as `tc qdisc ... netem delay D J
loss L` does. Packets may be reordered by the jitter, as with netem. On SIGTERM every packet still
held is let go; with --queue-bypass, traffic flows again once the program is gone.
"""
import argparse
import heapq
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND, NFQNL_COPY_META = 1, 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_DROP, NF_ACCEPT = 0, 1
NLM_F_REQUEST, NLM_F_ACK, NLMSG_ERROR = 1, 4, 2


def attr(kind, payload):
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def message(kind, queue, attrs, flags=NLM_F_REQUEST):
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, 0, 0) + body


def verdict(queue, packet, what):
    return message(NFQNL_MSG_VERDICT, queue, [attr(NFQA_VERDICT_HDR, struct.pack("!II", what, packet))])


def packets(data):
    """The ids of the queued packets in one read; raises on a netlink error."""
    off = 0
    while off + 16 <= len(data):
        size, kind = struct.unpack_from("=IH", data, off)
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", data, off + 16)
            if err:
                raise OSError(-err, "netlink error")
        elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = off + 20
            while a + 4 <= off + size:
                alen, akind = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if akind & 0x7FFF == NFQA_PACKET_HDR:
                    yield struct.unpack_from("!I", data, a + 4)[0]
                a += (alen + 3) & ~3
        off += (size + 3) & ~3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queue", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=100)
    ap.add_argument("--jitter-ms", type=float, default=50)
    ap.add_argument("--loss", type=float, default=0.1, help="probability of dropping a packet")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, 0))
    cmd = struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)
    sock.send(message(NFQNL_MSG_CONFIG, args.queue, [attr(NFQA_CFG_CMD, cmd)], NLM_F_REQUEST | NLM_F_ACK))
    list(packets(sock.recv(4096)))  # the ack, or the error (e.g. another program has the queue)
    params = attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
    maxlen = attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 16384))
    sock.send(message(NFQNL_MSG_CONFIG, args.queue, [params, maxlen]))
    held = []  # (due, packet id)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print(f"netdelay: queue {args.queue}, {args.delay_ms} ms +- {args.jitter_ms} ms, loss {args.loss}",
          file=sys.stderr, flush=True)
    while not stop:
        now = time.monotonic()
        while held and held[0][0] <= now:
            sock.send(verdict(args.queue, heapq.heappop(held)[1], NF_ACCEPT))
        wait = max(0.0, held[0][0] - now) if held else 0.5
        try:
            ready, _, _ = select.select([sock], [], [], wait)
        except InterruptedError:
            continue
        if not ready:
            continue
        try:
            data = sock.recv(1 << 16)
        except OSError:  # ENOBUFS: the kernel dropped some; they count as lost
            continue
        now = time.monotonic()
        for pid in packets(data):
            if rng.random() < args.loss:
                sock.send(verdict(args.queue, pid, NF_DROP))
            else:
                delay = args.delay_ms + rng.uniform(-args.jitter_ms, args.jitter_ms)
                heapq.heappush(held, (now + max(0.0, delay) / 1000, pid))
    for _, pid in held:
        sock.send(verdict(args.queue, pid, NF_ACCEPT))


if __name__ == "__main__":
    main()

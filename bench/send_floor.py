"""The fan-out floor: what the kernel alone charges to send one small frame to each
of N waiting clients, on this machine, in this run.

``python -m runstream.bench.send_floor --subscribers N --rounds R --interval S``
connects N loopback TCP sockets; a child process waits on all of them in one
epoll, as the bench's SSE client does, and reads whatever arrives. Every
``interval`` seconds the parent writes one frame-sized message to each socket
(``TCP_NODELAY``, as uvicorn's), and measures the CPU time its sends took.
It prints ``{"send_us": ..., "read_us": ...}``: CPU microseconds per message
sent, and per message read by the waiting side.

No Python work per message beyond the call: the sender's figure is what any
server in any language pays per (subscriber, event) on this machine, so
``1e6 / send_us`` is the most deliveries a second one process's core can make.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import time

# About the size of a fan-out frame: "id: 12\ndata: {"type": "text_delta", ...}\n\n".
MESSAGE = b"x" * 64


def _wait_and_read(port: int, subscribers: int, expected: int, ready: int) -> float:
    """The waiting side: connect, say so on ``ready``, wait on every socket in one
    epoll and read until ``expected`` messages came. CPU us per message read."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(subscribers)]
    poller = select.epoll()
    by_fd = {}
    for sock in sockets:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    os.write(ready, b"1")
    received = 0
    started = time.process_time()
    while received < expected:
        for fd, _ in poller.poll(5.0):
            received += len(by_fd[fd].recv(65536)) // len(MESSAGE)
    return (time.process_time() - started) * 1e6 / expected


def measure(subscribers: int, rounds: int, interval: float) -> dict[str, float]:
    # Each side in its own process, as server and client are (and each holds N sockets).
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    ready_r, ready_w = os.pipe()
    report_r, report_w = os.pipe()
    child = os.fork()
    if child == 0:
        listener.close()
        read_us = _wait_and_read(port, subscribers, subscribers * rounds, ready_w)
        os.write(report_w, json.dumps(read_us).encode())
        os._exit(0)
    servers = []
    for _ in range(subscribers):
        server, _ = listener.accept()
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        servers.append(server)
    listener.close()
    os.read(ready_r, 1)
    time.sleep(interval)  # the child is waiting in epoll by now
    spent = 0.0
    for _ in range(rounds):
        started = time.process_time()
        for server in servers:
            server.send(MESSAGE)
        spent += time.process_time() - started
        time.sleep(interval)
    read_us = json.loads(os.read(report_r, 100))
    os.waitpid(child, 0)
    for server in servers:
        server.close()
    return {"send_us": round(spent * 1e6 / (subscribers * rounds), 2), "read_us": round(read_us, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    print(json.dumps(measure(args.subscribers, args.rounds, args.interval)))


if __name__ == "__main__":
    main()

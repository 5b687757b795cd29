"""Loopback port picking for processes that must know each other's ports before they start."""

from __future__ import annotations

import socket
import threading

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago and that this process has not handed out.

    Binding port 0 and closing lets the kernel give the same port to the next caller, so two
    calls in a row (a server's port and its metrics port) could collide; remembering what was
    handed out keeps every port distinct within one process.
    """
    with _lock:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port

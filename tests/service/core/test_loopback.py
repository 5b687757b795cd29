"""Ports handed to peers before they start must never collide within one process."""

from __future__ import annotations

import socket

from service.core.loopback import free_port


def test_ports_handed_out_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))

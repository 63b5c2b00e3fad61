"""Ports for the local servers (hosts, Azurite, the emulator) in tests and benchmarks."""

from __future__ import annotations

import socket

import pytest

from local.azurite import ephemeral_ports, free_port


def test_a_free_port_is_never_one_an_outgoing_connection_could_hold() -> None:
    ephemeral = ephemeral_ports()
    picked = {free_port() for _ in range(50)}

    assert not picked & set(ephemeral)
    assert len(picked) > 1  # not one fixed port
    for port in picked:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # nothing listens there


def test_a_port_in_use_is_not_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        choices = iter([busy, busy, 15001 if busy != 15001 else 15002])
        monkeypatch.setattr("local.azurite.random.randrange", lambda *_: next(choices))
        monkeypatch.setattr("local.azurite.ephemeral_ports", lambda: range(60000, 60001))

        assert free_port() != busy

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


def kernel_pick() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_port_in_use_is_not_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        free = kernel_pick()
        choices = iter([busy, busy, free])
        monkeypatch.setattr("local.azurite.random.randrange", lambda *_: next(choices))

        assert free_port() == free


def test_a_kernel_range_leaving_no_room_below_falls_back_to_the_kernels_pick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("local.azurite.ephemeral_ports", lambda: range(1024, 65536))

    port = free_port()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))

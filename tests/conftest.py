"""Shared test setup: offline enforcement, offscreen Qt, small fixtures.

Every test runs with the network blocked: any socket connection to a non-loopback address
raises, so a code path that tries to download a model or data set fails loudly here.
"""

import os
import socket

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_create_connection = socket.create_connection


class NetworkBlockedError(RuntimeError):
    """Raised when a test tries to reach the network."""


def _is_local(address: object) -> bool:
    if isinstance(address, str):  # AF_UNIX path
        return True
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host in {"localhost", "::1"} or host.startswith("127.")
    return False


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_local(address):
        raise NetworkBlockedError(f"network access attempted in a test: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _is_local(address):
        raise NetworkBlockedError(f"network access attempted in a test: {address!r}")
    return _real_connect_ex(self, address)


def _guarded_create_connection(address, *args, **kwargs):  # type: ignore[no-untyped-def]
    if not _is_local(address):
        raise NetworkBlockedError(f"network access attempted in a test: {address!r}")
    return _real_create_connection(address, *args, **kwargs)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.create_connection = _guarded_create_connection  # type: ignore[assignment]


@pytest.fixture
def rng():
    """A seeded numpy Generator."""
    import numpy as np

    return np.random.default_rng(0)

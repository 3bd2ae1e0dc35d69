"""The offline guard itself must work, or every 'no network' claim is empty."""

import socket

import pytest


def test_outbound_connection_is_blocked():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="network access attempted"):
            s.connect(("93.184.216.34", 80))
    finally:
        s.close()
    with pytest.raises(RuntimeError, match="network access attempted"):
        socket.create_connection(("example.org", 443), timeout=1)


def test_loopback_is_allowed():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        c.connect(srv.getsockname())
    finally:
        c.close()
        srv.close()

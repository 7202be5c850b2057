"""Ports for servers the tests start."""

import socket


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's pick), for a server started next."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

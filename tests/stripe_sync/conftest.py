import socket

import pytest


@pytest.fixture
def unused_port() -> int:
    """A loopback port nobody listens on (bound once to learn a free number, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

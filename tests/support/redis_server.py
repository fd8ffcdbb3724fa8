"""A real redis-server on a free loopback port, for the rollout store's shared mode.

tests/conftest.py registers the fixture for every test; setup installs redis-server, so a
module using it carries `requires("redis-server")`.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import redis

from tests.support.openai_stub import free_port


@pytest.fixture
def redis_url(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.kill()
    process.wait(timeout=10)

"""A throwaway ``redis-server`` for tests: loopback, a free port, its own directory.

The server runs with ``appendonly yes`` and ``appendfsync always`` (the durability
the Redis event store requires) and no RDB snapshots, in a temporary directory
that :meth:`RedisServer.restart` reuses, so a test can stop (or ``kill -9``) the
server and check that what it acknowledged is still there.

The ``redis_server`` pytest fixture skips the test when the binary is missing
(``.ci/run`` installs it with apt-get).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

try:  # the fixture needs pytest; the helper itself does not
    import pytest
except ImportError:  # pragma: no cover
    pytest = None


def redis_server_binary() -> str | None:
    """Path of ``redis-server``, or None when it is not installed."""
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1.

    Args:
        directory: data directory (AOF files); a fresh temporary one when omitted
            (removed by :meth:`stop` with ``remove=True``).
        port: TCP port; a free one when omitted (kept across restarts).
        binary: path of ``redis-server``.
    """

    def __init__(self, directory: str | Path | None = None, port: int | None = None, binary: str | None = None):
        self.binary = binary or redis_server_binary()
        if self.binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return self
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
            "--protected-mode", "yes", "--loglevel", "warning", "--logfile", str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log")
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with status {self.process.returncode}: {tail}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, remove: bool = False) -> None:
        """Stop the server gracefully (SIGTERM); ``remove`` deletes an own temporary directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if remove and self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """``kill -9`` the server: no shutdown, no final AOF rewrite."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self, crash: bool = False) -> RedisServer:
        """Stop (or with ``crash`` kill -9) and start again on the same port and directory."""
        if crash:
            self.kill()
        else:
            self.stop()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(remove=True)


def running_redis_or_skip(directory: str | Path | None = None) -> RedisServer:
    """A started :class:`RedisServer`; skips the calling test when ``redis-server`` is missing."""
    if redis_server_binary() is None:
        if pytest is None:  # pragma: no cover
            raise RuntimeError("redis-server is not installed")
        pytest.skip("redis-server is not installed (.ci/run installs it with apt-get)")
    return RedisServer(directory).start()


if pytest is not None:

    @pytest.fixture
    def redis_server(tmp_path) -> Iterator[RedisServer]:
        """A throwaway Redis server in ``tmp_path/redis`` (skips without the binary)."""
        server = running_redis_or_skip(tmp_path / "redis")
        try:
            yield server
        finally:
            server.stop()

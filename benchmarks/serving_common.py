"""Shared by the service benchmarks: start/stop the real server, a light HTTP/1.1 client, percentiles.

``bench_serving.py`` and ``bench_reliability.py`` import this module (the
benchmarks directory is on ``sys.path`` when a benchmark runs as a script).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, *args: str, command: list[str] | None = None,
                 timeout: float = 180.0, log: Path | None = None) -> subprocess.Popen:
    """``recfunnel serve --model MODEL --port PORT ARGS`` (or ``command``) in a subprocess on
    loopback; returns once ``/readyz`` answers 200. The server's output goes to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RECFUNNEL_API_KEYS", None)
    cmd = command or [sys.executable, "-m", "recfunnel.cli", "serve", "--model", str(model), "--port", str(port),
                      "--quiet", *args]
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-2000:] if log is not None else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"server not ready within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(15)


def pct(values, q: float) -> float | None:
    """The ``q``-th percentile in milliseconds of ``values`` in seconds (None when empty)."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q) * 1e3)


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


class RawHTTP:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams (loopback, JSON bodies).

    It costs the load generator far less CPU per request than a full client library,
    which matters when the generator and the server share two cores. Connections are
    reused; a new one is opened whenever all are busy (open loop: requests never wait
    for a free connection).
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def _connection(self):
        if self._idle:
            return self._idle.pop()
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, payload: dict, timeout: float = 30.0) -> tuple[int, bytes]:
        """(status, body); status -1 when the connection failed or the answer did not come in time."""
        body = json.dumps(payload).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        conn = None
        try:
            conn = await self._connection()
            reader, writer = conn
            writer.write(head + body)
            status, data, close = await asyncio.wait_for(self._read(reader), timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            if conn is not None:
                conn[1].close()
            return -1, b""
        if close:
            writer.close()
        else:
            self._idle.append(conn)
        return status, data

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        status = int((await reader.readline()).split()[1])
        length, close = 0, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        return status, await reader.readexactly(length), close

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()

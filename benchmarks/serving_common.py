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


def write_json(path: Path | None, result) -> None:
    """Write a benchmark's result as JSON to ``path`` (its ``--out``; None: nothing)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def pct(values, q: float) -> float | None:
    """The ``q``-th percentile in milliseconds of ``values`` in seconds (None when empty)."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q) * 1e3)


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


class _StaleConnection(Exception):
    """The connection was closed before any byte of the answer arrived."""


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

    async def _connection(self, fresh: bool = False):
        while self._idle and not fresh:
            reader, writer = self._idle.pop()
            if not reader.at_eof():  # the server closes idle keep-alive connections (uvicorn: 5 s)
                return reader, writer, True
            writer.close()
        self.opened += 1
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, False

    async def post(self, path: str, payload: dict, timeout: float = 30.0) -> tuple[int, bytes]:
        """(status, body); status -1 when the connection failed or the answer did not come in time.

        A reused connection that the server closed just before the request (no answer
        at all) is retried once on a new connection, as HTTP clients do.
        """
        body = json.dumps(payload).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for attempt in range(2):
            writer = None
            try:
                reader, writer, reused = await self._connection(fresh=attempt > 0)
                writer.write(head + body)
                status, data, close = await asyncio.wait_for(self._read(reader), max(0.001, deadline - loop.time()))
            except _StaleConnection:
                writer.close()
                if reused and attempt == 0:
                    continue
                return -1, b""
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                if writer is not None:
                    writer.close()
                return -1, b""
            if close:
                writer.close()
            else:
                self._idle.append((reader, writer))
            return status, data
        return -1, b""

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        try:
            first = await reader.readline()
        except ConnectionResetError:
            raise _StaleConnection from None
        if not first:
            raise _StaleConnection
        status = int(first.split()[1])
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

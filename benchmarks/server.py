"""Run ``testlens serve`` as a real process for a benchmark, and stop it afterwards."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def testlens_cmd() -> str:
    return str(Path(sys.executable).with_name("testlens"))


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[str]:
    """Start a server with ``env``; yield its URL once it answers; its output goes to ``log``."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [testlens_cmd(), "serve", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/healthz").raise_for_status()
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        tail = log.read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"testlens serve did not start:\n{tail}") from None
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)

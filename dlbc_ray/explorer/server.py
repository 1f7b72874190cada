"""Serving the explorer with uvicorn: in the foreground (`dlbc-ray explorer`) or beside a demo."""

from __future__ import annotations

import ipaddress
import threading
import time

import uvicorn
from fastapi import FastAPI

from dlbc_ray.errors import ConfigError
from dlbc_ray.runtime.home import Home

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> list[str] | None:
    """On loopback, only requests addressed to loopback names (no DNS rebinding); elsewhere, any."""
    return LOOPBACK_NAMES if is_loopback(host) else None


def url(host: str, port: int) -> str:
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port (1..65535)", reason="port")
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                          server_header=False)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve until interrupted."""
    server = uvicorn.Server(config(app, host, port))
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        server.started = False
    if not server.started:
        raise ConfigError(f"cannot serve on {host}:{port} (in use, or not an address of this machine)",
                          reason="port")


class Background:
    """The explorer served from a daemon thread while the caller does other work (the demo mines)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.server = uvicorn.Server(config(app, host, port))
        self.thread = threading.Thread(target=self.server.run, name="explorer", daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the explorer could not serve on {self.server.config.host}:"
                                  f"{self.server.config.port} (in use?)", reason="port")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class DemoExplorer:
    """The explorer beside ``dlbc-ray demo --explorer``: the demo's callbacks keep its live state current."""

    def __init__(self, home: Home, host: str, port: int) -> None:
        from dlbc_ray.explorer.app import create_app
        from dlbc_ray.explorer.live import DemoFeed, LiveState

        self.live = LiveState(source="demo")
        self.feed = DemoFeed(self.live)
        self.url = url(host, port)
        self.background = Background(create_app(home, self.live, allowed_hosts=allowed_hosts(host)), host, port)

    def start(self) -> str:
        self.background.start()
        return self.url

    def stop(self) -> None:
        self.background.stop()

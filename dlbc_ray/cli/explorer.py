"""`dlbc-ray explorer`: the chain and the live network in a browser, read-only, on loopback by default."""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from dlbc_ray.cli._app import err, out, resolve_home
from dlbc_ray.errors import ConfigError

HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on; loopback unless you say otherwise.")]
PortOpt = Annotated[int, typer.Option("--port", help="TCP port.")]


def explorer(
    home: Annotated[Path | None, typer.Option("--home", help="Home directory (default $DLBC_HOME or ~/.dlbc-ray).")] = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster of the live network (default: "
                                                                  "where this home's network runs).")] = None,
) -> None:
    """Serve a read-only web explorer of this home's chain; with a network up, its live rounds too."""
    from dlbc_ray.explorer import ClusterPoller, LiveState, create_app
    from dlbc_ray.explorer.server import allowed_hosts, is_loopback, serve, url

    check_listen(host, port)
    h = resolve_home(home, create=False)
    live = LiveState(source="cluster")
    poller = ClusterPoller(h, live, address=address)
    warn_if_exposed(host, is_loopback(host))
    poller.start()
    out.print(f"explorer: {url(host, port)} (read-only; Ctrl-C to stop)", highlight=False)
    try:
        serve(create_app(h, live, allowed_hosts=allowed_hosts(host)), host, port)
    finally:
        poller.stop()


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def check_listen(host: str, port: int) -> None:
    """An IP address or a host name, and a TCP port, or one ConfigError naming the option."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            shown = host[:40].encode("unicode_escape").decode() or "''"
            raise ConfigError(f"--host {shown} is neither an IP address nor a host name (all interfaces: 0.0.0.0)",
                              reason="host") from None
    if not 1 <= port <= 65_535:
        raise ConfigError(f"--port {port} is not a TCP port (1..65535)", reason="port")


def warn_if_exposed(host: str, loopback: bool) -> None:
    if not loopback:
        err.print(f"[yellow]warning[/]: serving on {host}: anyone who reaches this address can read the chain, "
                  "the balances and the live network; prefer 127.0.0.1 and an SSH tunnel", highlight=False)


def open_browser(address: str) -> bool:
    """Open a graphical browser where there is a display; never a terminal browser over a live view."""
    graphical = sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return graphical and webbrowser.open(address)

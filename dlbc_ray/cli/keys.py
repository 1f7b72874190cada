"""`dlbc-ray keys`: Ed25519 identities kept in the home (mode 0600); only public keys are shown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlbc_ray.cli._app import new_app, out, print_json, resolve_home
from dlbc_ray.errors import ConfigError
from dlbc_ray.runtime.keystore import create_key, key_path, list_keys, load_key

app = new_app("Create and list signing identities.")

HomeOpt = Annotated[Path | None, typer.Option("--home", help="Home directory (default $DLBC_HOME or ~/.dlbc-ray).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command("new")
def new(name: Annotated[str, typer.Option("--name", help="Name of the new identity.")],
        home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Create a new Ed25519 identity; refuses to overwrite an existing one."""
    h = resolve_home(home)
    identity = create_key(h, name)
    info = {"name": name, "public_key": identity.public_key, "path": str(key_path(h, name))}
    if json:
        print_json(info)
    else:
        out.print(f"created [bold]{name}[/] {identity.public_key}\n  {info['path']} (mode 0600)")


@app.command("show")
def show(name: Annotated[str | None, typer.Option("--name", help="Show only this identity.")] = None,
         home: HomeOpt = None, json: JsonOpt = False) -> None:
    """Public keys of the identities in the home (never the secrets)."""
    h = resolve_home(home, create=False)
    keys = [(name, load_key(h, name).public_key, key_path(h, name))] if name else [
        (k.name, k.public_key, k.path) for k in list_keys(h)]
    if not keys:
        raise ConfigError(f"no keys in {h.keys}; create one with `dlbc-ray keys new --name NAME`", reason="no_keys")
    if json:
        print_json([{"name": n, "public_key": pk, "path": str(p)} for n, pk, p in keys])
        return
    width = max(len(n) for n, _, _ in keys)
    for n, pk, p in keys:  # one line each, never wrapped: keys are meant to be copied
        out.print(f"[bold]{n:<{width}}[/]  {pk}  [dim]{p}[/]", highlight=False)

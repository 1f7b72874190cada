"""`dlbc-ray`: the command-line entry point. Wiring only; each command calls one library function."""

from __future__ import annotations

from typing import Annotated

import typer

from dlbc_ray.cli import bench, chain, keys, network, watermark
from dlbc_ray.cli._app import guard, new_app, require_token_auth, set_debug
from dlbc_ray.cli.attack import attack
from dlbc_ray.cli.audit import audit
from dlbc_ray.cli.demo import demo
from dlbc_ray.cli.explorer import explorer
from dlbc_ray.cli.nets import nets

app = new_app("dlbc-ray: a blockchain whose consensus is useful deep-learning work, run on Ray.")


@app.callback()
@guard
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an unexpected error.")] = False,
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth", help="Run Ray without token auth (RAY_AUTH_MODE other than 'token' needs this).")] = False,
) -> None:
    """Options for every command; Ray's token auth is on unless --insecure-no-auth says otherwise."""
    set_debug(debug)
    require_token_auth(insecure_no_auth=insecure_no_auth)


app.command("demo")(demo)
app.command("attack")(attack)
app.command("explorer")(explorer)
app.command("nets")(nets)
app.command("audit")(audit)
for command in (network.up, network.down, network.status, network.submit, network.result, network.balance,
                network.transfer):
    app.command(command.__name__)(command)
app.add_typer(chain.app, name="chain")
app.add_typer(bench.app, name="bench")
app.add_typer(watermark.app, name="watermark")
app.add_typer(keys.app, name="keys")


def main() -> None:
    app()

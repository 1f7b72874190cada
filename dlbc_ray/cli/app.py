"""`dlbc-ray`: the command-line entry point. Wiring only; each command calls one library function."""

from __future__ import annotations

from dlbc_ray.cli import bench, chain, keys, network, watermark
from dlbc_ray.cli._app import new_app
from dlbc_ray.cli.attack import attack
from dlbc_ray.cli.demo import demo

app = new_app("dlbc-ray: a blockchain whose consensus is useful deep-learning work, run on Ray.")
app.command("demo")(demo)
app.command("attack")(attack)
for command in (network.up, network.down, network.status, network.submit, network.result, network.balance,
                network.transfer):
    app.command(command.__name__)(command)
app.add_typer(chain.app, name="chain")
app.add_typer(bench.app, name="bench")
app.add_typer(watermark.app, name="watermark")
app.add_typer(keys.app, name="keys")


def main() -> None:
    app()

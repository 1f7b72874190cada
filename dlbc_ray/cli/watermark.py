"""`dlbc-ray watermark`: read a miner's DNN watermark in a model file, exactly as validators read it.

The architecture comes from the task the artifact names (its ``task_id`` metadata, looked
up in the home's ledger) or from ``--model``/``--input-shape``/``--classes``. The miner's
key is derived from its key file in the home. Nothing is written.
"""

from __future__ import annotations

import json as jsonlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dlbc_ray.cli._app import new_app, out, print_json, resolve_home
from dlbc_ray.config import ProtectionConfig
from dlbc_ray.crypto import Identity, hash_weights
from dlbc_ray.errors import ConfigError, InvalidModelFile
from dlbc_ray.runtime.home import Home, read_ledger
from dlbc_ray.runtime.keystore import load_key
from dlbc_ray.ledger import load_safetensors

app = new_app("Read a miner's DNN watermark (Uchida, as DLBC uses it) in a model file.")

HomeOpt = Annotated[Path | None, typer.Option("--home", help="Home directory (default $DLBC_HOME or ~/.dlbc-ray).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
_SHAPE = re.compile(r"^\s*\d+(\s*[,x]\s*\d+)*\s*$")


@dataclass(frozen=True)
class Architecture:
    """What a model file must be: a registry net, its hyperparameters, inputs and classes."""

    model: str
    params: dict[str, Any]
    input_shape: tuple[int, ...]
    n_classes: int
    source: str  # "task <id>" or "options"


def parse_shape(text: str) -> tuple[int, ...]:
    """``1,8,8`` or ``1x8x8`` -> ``(1, 8, 8)``."""
    if not _SHAPE.match(text) or any(int(d) < 1 for d in re.split(r"[,x]", text)):
        raise ConfigError(f"--input-shape must be positive integers like 1,8,8, got {text!r}", reason="input_shape")
    return tuple(int(d) for d in re.split(r"[,x]", text))


MAX_PARAMS_CHARS = 4096  # a net's hyperparameters are a few short lists; nesting beyond that is not one


def parse_params(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        params = jsonlib.loads(text) if len(text) <= MAX_PARAMS_CHARS else None
    except (jsonlib.JSONDecodeError, RecursionError):
        params = None
    if not isinstance(params, dict):
        raise ConfigError(f"--params must be a JSON object like '{{\"hidden\": [128, 64]}}', got {text!r}",
                          reason="params")
    return params


def from_options(model: str | None, input_shape: str | None, classes: int | None,
                 params: str | None) -> Architecture | None:
    """The architecture the options state, or None when they state none."""
    if model is None:
        if input_shape is not None or classes is not None or params is not None:
            raise ConfigError("--input-shape, --classes and --params go with --model", reason="options")
        return None
    if input_shape is None or classes is None:
        raise ConfigError("--model needs --input-shape and --classes too (e.g. --input-shape 1,8,8 --classes 10)",
                          reason="options")
    return Architecture(model, parse_params(params), parse_shape(input_shape), classes, "options")


def file_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata of a file that ``load_safetensors`` has already read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidModelFile(f"{path}: unreadable metadata ({e})", reason="not_safetensors") from None


def from_task(home: Home, path: Path, metadata: dict[str, str]) -> Architecture:
    """The architecture of the task the artifact names, from the home's ledger."""
    hint = "pass --model, --input-shape and --classes"
    task_id = metadata.get("task_id")
    if not task_id:
        raise ConfigError(f"{path} names no task in its metadata; {hint}", reason="no_task")
    if not home.ledger.exists():
        raise ConfigError(f"{path} names task {task_id[:12]} but {home.root} has no ledger; {hint}", reason="no_task")
    chain = read_ledger(home)
    try:
        record = chain.state.tasks.get(task_id)
    finally:
        chain.close()
    if record is None:
        raise ConfigError(f"task {task_id[:12]} of {path} is not in the ledger of {home.root}; {hint}",
                          reason="no_task")
    spec = record.task
    return Architecture(spec.model.name, dict(spec.model.params), tuple(spec.dataset.input_shape),
                        spec.dataset.n_classes, f"task {task_id}")


def verdict(owned: bool, carried: bool, name: str) -> str:
    """The validators' reading: the owner's mark intact, or present beyond chance, or absent."""
    if owned:
        return f"owned by {name}"
    if carried:
        return f"carries {name}'s mark"
    return f"not {name}'s"


def read_mark(weights: dict[str, Any], arch: Architecture, identity: Identity,
              protection: ProtectionConfig) -> dict[str, Any]:
    """Check the architecture, derive the miner's key as validators do, and read its bits."""
    from dlbc_ray.models import watermark  # torch loads only for the command that reads weights
    from dlbc_ray.models import protect
    from dlbc_ray.models.nets import build_net
    from dlbc_ray.models.weights import check_architecture

    check_architecture(build_net(arch.model, arch.params, arch.input_shape, arch.n_classes), weights)
    key = protect.watermark_key(identity.derive("watermark"), identity.public_key, weights, arch.model,
                                protection.watermark_bits)
    mark = protect.read_mark(weights, key, protection)
    return {"host": key.layer, "M": int(key.x.shape[0]), "T": mark.t, "bit_errors": mark.errors, "ber": mark.ber,
            "chance": mark.chance, "margin": watermark.projection_margin(weights, key),
            "max_ber": protection.max_ber, "foreign_p": protection.foreign_p,
            "verdict": verdict(mark.owned, mark.carried, identity.name), "owned": mark.owned,
            "carried": mark.carried}


def _declared(metadata: dict[str, str], identity: Identity) -> str:
    declared = metadata.get("miner")
    if not declared:
        return "none"
    return identity.name if declared == identity.public_key else f"another key, {declared[:16]}..."


@app.command("check")
def check(
    model_file: Annotated[Path, typer.Argument(metavar="MODEL.safetensors", help="The model file to read.")],
    miner: Annotated[str, typer.Option("--miner", help="Name of the miner's key in the home.")],
    home: HomeOpt = None,
    json: JsonOpt = False,
    model: Annotated[str | None, typer.Option(
        "--model", help="Registry net (mlp, cnn, cnn1d); default: the net of the task the file names.")] = None,
    input_shape: Annotated[str | None, typer.Option("--input-shape", help="With --model: e.g. 1,8,8.")] = None,
    classes: Annotated[int | None, typer.Option("--classes", help="With --model: number of classes.")] = None,
    params: Annotated[str | None, typer.Option(
        "--params", help="With --model: net hyperparameters as JSON, e.g. '{\"hidden\": [128, 64]}'.")] = None,
) -> None:
    """Bit error rate and margin of miner NAME's watermark in MODEL.safetensors, and the verdict."""
    stated = from_options(model, input_shape, classes, params)
    h = resolve_home(home, create=False)
    identity = load_key(h, miner)
    weights = load_safetensors(model_file)
    metadata = file_metadata(model_file)
    arch = stated or from_task(h, model_file, metadata)
    mark = read_mark(weights, arch, identity, ProtectionConfig())
    info = {"file": str(model_file), "model_hash": hash_weights(weights), "net": arch.model,
            "architecture_from": arch.source, "miner": miner, "public_key": identity.public_key,
            "artifact_miner": _declared(metadata, identity), **mark}
    if json:
        print_json(info)
    else:
        _print(info)


def _print(info: dict[str, Any]) -> None:
    rows = [("file", f"{info['file']} (weights {info['model_hash'][:16]})"),
            ("net", f"{info['net']}, from {info['architecture_from']}"),
            ("miner", f"{info['miner']} {info['public_key']} (artifact names: {info['artifact_miner']})"),
            ("host", f"{info['host']}, M={info['M']}, T={info['T']} bits"),
            ("BER", f"{info['ber']:.4f} ({info['bit_errors']}/{info['T']} bits wrong; owner needs <= "
                    f"{info['max_ber']}; chance an unmarked model matches this well: {info['chance']:.1e}, "
                    f"a mark counts below {info['foreign_p']:.0e})"),
            ("margin", f"{info['margin']:.4f} (mean sigmoid agreement; about 0.5 for an unmarked model)"),
            ("verdict", f"[bold]{escape(info['verdict'])}[/]")]
    for label, text in rows:
        out.print(f"{label:<8} {text}", highlight=False, markup=label == "verdict")

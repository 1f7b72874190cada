"""Content-addressed model files: ``<model_hash>.safetensors``, verified on write and on read."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from dlbc_ray.crypto import hash_weights
from dlbc_ray.errors import InvalidModelFile


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file; anything else gives one line saying what the file is not."""
    if not path.is_file():
        raise InvalidModelFile(f"{path}: no such model file", reason="missing")
    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidModelFile(f"{path} is not a valid safetensors model file ({e})", reason="not_safetensors") from None


def save_safetensors(weights: Mapping[str, np.ndarray], path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class ArtifactStore:
    """Model weights named by their canonical hash (not the file's bytes: the tensors')."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, model_hash: str) -> Path:
        return self.root / f"{model_hash}.safetensors"

    def has(self, model_hash: str) -> bool:
        return self.path(model_hash).is_file()

    def put(self, weights: Mapping[str, np.ndarray], model_hash: str | None = None,
            metadata: dict[str, str] | None = None) -> Path:
        actual = hash_weights(weights)
        if model_hash is not None and actual != model_hash:
            raise InvalidModelFile(f"weights hash to {actual[:12]}, not {model_hash[:12]}", reason="hash_mismatch")
        target = self.path(actual)
        return target if target.is_file() else save_safetensors(weights, target, metadata)

    def metadata(self, model_hash: str) -> dict[str, str]:
        from safetensors import safe_open

        with safe_open(str(self.path(model_hash)), framework="numpy") as f:
            return dict(f.metadata() or {})

    def get(self, model_hash: str) -> dict[str, np.ndarray]:
        weights = load_safetensors(self.path(model_hash))
        if hash_weights(weights) != model_hash:
            raise InvalidModelFile(f"{self.path(model_hash)} does not hash to its name", reason="hash_mismatch")
        return weights

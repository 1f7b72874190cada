"""A task's code package may not take the name of a module the node's Python already has (issue 10 (4)).

Installed first on ``sys.path`` inside a validator, a package named ``json`` or ``safetensors`` would
replace that module in every later import of the process, the validator's own reads of weights too.
It is refused where the code is hashed: by the requester's task file, and by every node before it
installs the code (the coordinator's admission, miners, validators), in one line naming the package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.taskcode import check_code, code_hash, code_spec

EXAMPLE = Path(__file__).parent.parent / "examples" / "custom_model" / "dlbc_resnet"


def renamed(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__")))


@pytest.mark.parametrize("name", ["json", "safetensors", "numpy", "torch", "os", "dlbc_ray", "this", "sqlite3"])
def test_a_package_named_like_an_installed_or_stdlib_module_is_refused(tmp_path: Path, name: str) -> None:
    package = renamed(tmp_path, name)
    for hashing in (code_hash, code_spec, lambda p: check_code(p, "0" * 64, allowed=True)):
        with pytest.raises(InvalidTask) as refused:
            hashing(package)
        assert refused.value.reason == "shadows_module" and "\n" not in str(refused.value)
        assert f"'{name}'" in str(refused.value) and len(str(refused.value)) < 300


def test_a_wheel_named_like_a_module_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "safetensors-9.9-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    with pytest.raises(InvalidTask) as refused:
        code_hash(wheel)
    assert refused.value.reason == "shadows_module"


def test_a_package_with_a_name_of_its_own_is_hashed(tmp_path: Path) -> None:
    assert code_hash(renamed(tmp_path, "dlbc_resnet_own_name")) != code_hash(EXAMPLE)
    assert code_spec(EXAMPLE)[0] == "dlbc_resnet"


def test_the_requesters_own_copy_on_its_path_is_no_clash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The requester's process may import its own package (install_local) before it hashes it again."""
    package = renamed(tmp_path, "dlbc_resnet_local_copy")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert code_spec(package)[0] == "dlbc_resnet_local_copy"


def test_another_copy_of_a_task_package_importable_from_a_folder_is_no_clash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A requester's checkout (or an earlier task's code) on the path is not an installed module: hashing a
    copy of the same package elsewhere still works, wherever the first one was imported from."""
    import importlib

    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    importlib.import_module("dlbc_resnet")
    assert code_hash(renamed(tmp_path, "dlbc_resnet")) == code_hash(EXAMPLE)

"""Task code: one hash for a package folder or wheel; a changed file, a missing opt-in or a link is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.taskcode import check_code, code_hash, runtime_env

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_model" / "dlbc_resnet"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "a" / "dlbc_resnet", ignore=shutil.ignore_patterns("__pycache__")))


def test_the_hash_is_of_content_not_place_and_ignores_caches(package: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(package, tmp_path / "b" / "dlbc_resnet"))
    assert code_hash(package) == code_hash(copy) == code_hash(EXAMPLE)
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "nets.cpython-311.pyc").write_bytes(b"cache")
    (copy / "x.egg-info").mkdir()
    (copy / "x.egg-info" / "PKG-INFO").write_text("meta")
    assert code_hash(copy) == code_hash(package)


@pytest.mark.parametrize("change", ["edit", "add", "rename", "empty_file"])
def test_any_change_to_shipped_files_changes_the_hash(package: Path, change: str) -> None:
    before = code_hash(package)
    nets = package / "nets.py"
    if change == "edit":
        nets.write_text(nets.read_text().replace("padding=1", "padding=2", 1))
    elif change == "add":
        (package / "extra.py").write_text("")
    elif change == "rename":
        nets.rename(package / "nets2.py")
    else:
        (package / "sub").mkdir()
        (package / "sub" / "__init__.py").write_text("")
    assert code_hash(package) != before
    with pytest.raises(InvalidTask, match="a file changed") as info:
        check_code(package, before, allowed=True)
    assert info.value.reason == "code_mismatch"


def test_code_runs_only_when_the_operator_allowed_it(package: Path) -> None:
    with pytest.raises(InvalidTask, match="dlbc-ray up --allow-task-code") as info:
        check_code(package, code_hash(package), allowed=False)
    assert info.value.reason == "task_code_off"
    check_code(package, code_hash(package), allowed=True)


def test_wheels_hash_as_bytes_and_odd_code_is_refused(package: Path, tmp_path: Path) -> None:
    wheel = tmp_path / "p-0.1-py3-none-any.whl"
    wheel.write_bytes(b"PK fake wheel")
    first = code_hash(wheel)
    wheel.write_bytes(b"PK fake wheel!")
    assert code_hash(wheel) != first
    with pytest.raises(InvalidTask, match="package folder \\(with __init__.py\\) or a .whl"):
        code_hash(tmp_path)
    (package / "link.py").symlink_to(package / "nets.py")
    with pytest.raises(InvalidTask, match="symbolic links"):
        code_hash(package)


@pytest.mark.ray
def test_runtime_env_ships_the_package_to_a_ray_worker(ray_session: None, package: Path) -> None:
    import ray

    @ray.remote(num_cpus=0)
    def factory_name() -> str:
        from dlbc_resnet.nets import resnet_small

        return resnet_small.__name__

    assert ray.get(factory_name.options(runtime_env=runtime_env(package)).remote(), timeout=120) == "resnet_small"

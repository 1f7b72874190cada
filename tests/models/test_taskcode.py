"""Task code: one hash for a package folder or wheel; a changed file, a missing opt-in or a link is refused."""

from __future__ import annotations

import importlib
import io
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from dlbc_ray.actors import task_code
from dlbc_ray.actors.task_code import upload
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models.plugins import net_info
from dlbc_ray.models.taskcode import archive, check_allowed, check_code, code_hash, code_spec, code_uri, unpack
from dlbc_ray.schema.task import CodeSpec

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


def test_the_archive_ships_exactly_the_hashed_files(package: Path, tmp_path: Path) -> None:
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "nets.cpython-311.pyc").write_bytes(b"cache")
    data = archive(package)
    assert data == archive(package)  # the same bytes every time: one archive per hash
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert all(n.startswith("dlbc_resnet/") and "__pycache__" not in n for n in zf.namelist())
    assert code_hash(unpack(data, "dlbc_resnet", tmp_path / "out") / "dlbc_resnet") == code_hash(package)


@pytest.mark.parametrize("name", ["../evil.py", "/etc/evil.py", "other_pkg/x.py", "dlbc_resnet/../../x.py"])
def test_an_archive_that_writes_outside_its_package_is_refused(tmp_path: Path, name: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("dlbc_resnet/__init__.py", "")
        zf.writestr(name, "print('owned')")
    with pytest.raises(InvalidTask, match="outside the package") as info:
        unpack(buffer.getvalue(), "dlbc_resnet", tmp_path / "out")
    assert info.value.reason == "bad_code" and not (tmp_path / "evil.py").exists()
    with pytest.raises(InvalidTask, match="not a zip"):
        unpack(b"not a zip", "dlbc_resnet", tmp_path / "out2")


def test_a_task_with_code_is_refused_in_one_line_that_says_how_to_enable_it() -> None:
    code = CodeSpec(package="dlbc_resnet", hash="0" * 64)
    with pytest.raises(InvalidTask) as info:
        check_allowed(code, allowed=False)
    assert info.value.reason == "task_code_off" and "\n" not in str(info.value)
    assert str(info.value) == ("this task ships its own code (dlbc_resnet); start the network with "
                               "`dlbc-ray up --allow-task-code` to run it")
    check_allowed(code, allowed=True)
    check_allowed(None, allowed=False)


def test_the_uri_is_named_by_the_signed_hash() -> None:
    assert code_uri("ab" * 32, "dlbc_resnet") == "gcs://_ray_pkg_" + "ab" * 16 + ".zip"
    assert code_uri("ab" * 32, "p-0.1-py3-none-any.whl").endswith("/p-0.1-py3-none-any.whl")


# ----------------------------------------------------------------------- on a real Ray cluster


def _fresh(package: Path, version: str) -> Path:
    (package / "version.py").write_text(f"VERSION = {version!r}\n")
    return package


@pytest.mark.ray
def test_the_upload_is_a_runtime_env_py_module_a_fresh_ray_worker_imports(ray_session: None, package: Path) -> None:
    import ray

    _fresh(package, "v1")
    name, digest = code_spec(package)
    code = CodeSpec(package=name, hash=digest)
    upload(package, code)

    @ray.remote(num_cpus=0)
    def shipped() -> tuple[str, str]:
        from dlbc_resnet.nets import resnet_small
        from dlbc_resnet.version import VERSION

        return resnet_small.__name__, VERSION

    env = {"py_modules": [code_uri(digest, name)]}
    assert ray.get(shipped.options(runtime_env=env).remote(), timeout=120) == ("resnet_small", "v1")


@pytest.mark.ray
def test_a_node_loads_what_the_task_signed_and_swaps_versions(ray_session: None, package: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_code, "ROOT", tmp_path / "node")
    specs = []
    for version in ("v1", "v2"):
        _fresh(package, version)
        specs.append(CodeSpec(package="dlbc_resnet", hash=code_hash(package)))
        upload(package, specs[-1])
    try:
        for spec, version in [(specs[0], "v1"), (specs[1], "v2"), (specs[0], "v1")]:
            task_code.install(spec)
            assert importlib.import_module("dlbc_resnet.version").VERSION == version
            assert net_info("dlbc_resnet.nets:resnet_small").first_layer == "stem.weight"
    finally:
        task_code._unload("dlbc_resnet")
    assert "dlbc_resnet" not in sys.modules


@pytest.mark.ray
def test_a_tampered_upload_is_refused_by_every_node(ray_session: None, package: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.experimental.internal_kv import _internal_kv_put

    monkeypatch.setattr(task_code, "ROOT", tmp_path / "node")
    _fresh(package, "signed")
    signed = CodeSpec(package="dlbc_resnet", hash=code_hash(package))
    _fresh(package, "tampered")
    _internal_kv_put(code_uri(signed.hash, signed.package), archive(package), overwrite=True)
    with pytest.raises(InvalidTask, match="task code dlbc_resnet hashes to .*a file changed") as info:
        task_code.install(signed)
    assert info.value.reason == "code_mismatch" and "dlbc_resnet" not in sys.modules
    assert not list((tmp_path / "node").glob("*/dlbc_resnet"))  # nothing unchecked stays on disk


@pytest.mark.ray
def test_a_file_changed_after_the_task_was_made_is_not_uploaded(ray_session: None, package: Path) -> None:
    signed = CodeSpec(package="dlbc_resnet", hash=code_hash(_fresh(package, "as signed")))
    _fresh(package, "edited later")
    with pytest.raises(InvalidTask, match="dlbc_resnet: task code changed since") as info:
        upload(package, signed)
    assert info.value.reason == "code_mismatch"


@pytest.mark.ray
def test_code_never_uploaded_is_refused_by_name(ray_session: None, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(task_code, "ROOT", tmp_path / "node")
    with pytest.raises(InvalidTask, match="task code ghost .* was never uploaded") as info:
        task_code.install(CodeSpec(package="ghost", hash="1" * 64))
    assert info.value.reason == "code_missing"

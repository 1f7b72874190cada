from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from dlbc_ray.errors import ConfigError, KeyFileError
from dlbc_ray.home import open_home
from dlbc_ray.keystore import create_key, key_path, list_keys, load_key, load_or_create_key


@pytest.fixture
def home(tmp_path: Path):
    return open_home(tmp_path / "home")


def test_new_key_is_private_and_loads_back(home) -> None:
    assert not home.keys.exists()  # made on first write, not on open
    identity = create_key(home, "alice")
    path = key_path(home, "alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.keys.stat().st_mode) == 0o700
    assert load_key(home, "alice").public_key == identity.public_key
    assert [k.name for k in list_keys(home)] == ["alice"]


def test_existing_key_is_never_overwritten(home) -> None:
    first = create_key(home, "alice")
    with pytest.raises(KeyFileError, match="already exists"):
        create_key(home, "alice")
    assert load_or_create_key(home, "alice").public_key == first.public_key


def test_loose_permissions_are_refused(home) -> None:
    create_key(home, "alice")
    key_path(home, "alice").chmod(0o644)
    with pytest.raises(KeyFileError, match="mode 0644"):
        load_key(home, "alice")


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "not JSON"),
    (json.dumps({"secret_key": "zz"}), "no hex secret_key"),
    (json.dumps({"secret_key": "ab" * 16}), "16-byte secret"),
    (json.dumps({"secret_key": "ab" * 32, "public_key": "00" * 32}), "does not match"),
])
def test_bad_content_is_one_line_naming_the_file(home, content: str, message: str) -> None:
    path = key_path(home, "bob")
    path.parent.mkdir(mode=0o700)
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        load_key(home, "bob")
    assert message in str(info.value) and str(path) in str(info.value)


def test_bad_names_and_homes(tmp_path: Path, home) -> None:
    with pytest.raises(ConfigError):
        key_path(home, "../escape")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        open_home(tmp_path / "file")
    with pytest.raises(ConfigError, match="does not exist"):
        open_home(tmp_path / "nope", create=False)

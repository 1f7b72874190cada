from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from dlbc_ray.errors import ConfigError, KeyFileError
from dlbc_ray.runtime.home import open_home
from dlbc_ray.runtime.keystore import create_key, key_path, list_keys, load_key, load_or_create_key


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
    ("[" * 3000, "not JSON"),  # nests past the JSON decoder's recursion limit within the 4 KB cap
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


# Finding 8 of issue 10: a key is read only from a private folder, as the file it claims to be.


def test_symlinked_key_file_is_refused(home) -> None:
    """``bob.key -> treasury.key`` must not load as bob and sign with the treasury's key."""
    create_key(home, "treasury")
    key_path(home, "bob").symlink_to(key_path(home, "treasury"))
    with pytest.raises(KeyFileError, match="symlink") as info:
        load_key(home, "bob")
    assert str(key_path(home, "bob")) in str(info.value)
    with pytest.raises(KeyFileError, match="symlink"):
        load_or_create_key(home, "bob")
    with pytest.raises(KeyFileError, match="symlink"):
        list_keys(home)


def test_dangling_symlink_is_not_written_through(home, tmp_path: Path) -> None:
    home.keys.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.key"
    key_path(home, "bob").symlink_to(target)
    with pytest.raises(KeyFileError):
        load_or_create_key(home, "bob")
    assert not target.exists()


def test_symlinked_keys_folder_is_refused(home, tmp_path: Path) -> None:
    real = tmp_path / "other-keys"
    real.mkdir(mode=0o700)
    home.keys.symlink_to(real)
    with pytest.raises(KeyFileError, match="symlink") as info:
        create_key(home, "alice")
    assert str(home.keys) in str(info.value)
    assert not list(real.iterdir())


@pytest.mark.parametrize("mode", [0o777, 0o750, 0o701], ids=oct)
def test_open_keys_folder_is_refused_with_the_fix(home, mode: int) -> None:
    create_key(home, "alice")
    home.keys.chmod(mode)
    for attempt in (lambda: load_key(home, "alice"), lambda: create_key(home, "bob"), lambda: list_keys(home)):
        with pytest.raises(KeyFileError) as info:
            attempt()
        message = str(info.value)
        assert f"mode {mode:04o}" in message and str(home.keys) in message and f"chmod 700 {home.keys}" in message
        assert "\n" not in message


def test_keys_folder_of_another_user_is_refused(home, monkeypatch: pytest.MonkeyPatch) -> None:
    create_key(home, "alice")
    monkeypatch.setattr("dlbc_ray.runtime.keystore.os.getuid", lambda: home.keys.stat().st_uid + 1)
    with pytest.raises(KeyFileError, match="owned by uid") as info:
        load_key(home, "alice")
    assert str(home.keys) in str(info.value)


def test_name_inside_the_file_must_match_its_file_name(home) -> None:
    create_key(home, "treasury")
    key_path(home, "treasury").rename(key_path(home, "bob"))
    with pytest.raises(KeyFileError, match="'treasury'") as info:
        load_key(home, "bob")
    assert str(key_path(home, "bob")) in str(info.value)


def test_key_written_atomically_with_no_leftovers(home) -> None:
    identity = create_key(home, "alice")
    assert [p.name for p in home.keys.iterdir()] == ["alice.key"]
    record = json.loads(key_path(home, "alice").read_text())
    assert record["name"] == "alice" and record["public_key"] == identity.public_key


def test_secrets_never_reach_the_log(home, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    identity = create_key(home, "alice")
    load_key(home, "alice")
    list_keys(home)
    assert identity.secret_bytes().hex() not in caplog.text + repr(identity)

"""Client helpers that must degrade by name, never by swallowing everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlbc_ray.runtime import client, keystore
from dlbc_ray.runtime.home import Home


def test_names_skip_a_home_with_a_bad_key_file_but_not_a_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path)
    alice = keystore.create_key(home, "alice")
    assert client.names(home) == {alice.public_key: "alice"}
    (home.keys / "bob.key").write_text("{}")
    (home.keys / "bob.key").chmod(0o644)  # refused by the keystore: the listing only loses names
    assert client.names(home) == {}

    def broken(home: Home) -> list[keystore.KeyInfo]:
        raise RuntimeError("a bug, not a bad file")

    monkeypatch.setattr(client, "list_keys", broken)
    with pytest.raises(RuntimeError):
        client.names(home)


def test_an_unreadable_key_file_is_one_named_error(tmp_path: Path) -> None:
    home = Home(tmp_path)
    keystore.create_key(home, "alice")
    path = home.keys / "carol.key"
    path.mkdir(mode=0o700)  # a directory where a key file belongs
    with pytest.raises(keystore.KeyFileError) as info:
        keystore.load_key(home, "carol")
    assert "carol.key" in str(info.value) and info.value.reason == "content"


def test_status_lists_the_clusters_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13's `dlbc-ray status` shows nodes that joined or left (Ray stubbed: answers are immediate)."""
    import ray

    from dlbc_ray.actors import _ray
    from tests.builders import World

    world = World()

    class Call:
        def __init__(self, value: object) -> None:
            self.value = value

        def remote(self, *args: object) -> object:
            return self.value

    consensus = type("C", (), {"snapshot": Call(world.state), "queue": Call([]), "rounds": Call([]),
                               "members": Call({"miners": [], "validators": []})})()
    monkeypatch.setattr(client, "attach", lambda home, address: consensus)
    monkeypatch.setattr(_ray.ray, "get", lambda ref, timeout=None: ref)
    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeID": "a" * 8, "Alive": True, "Resources": {"CPU": 2.0}},
                                               {"NodeID": "b" * 8, "Alive": False, "Resources": {}}])
    info = client.status(Home(tmp_path), address=None)
    assert info["nodes"] == [{"node_id": "a" * 8, "alive": True, "resources": {"CPU": 2.0}},
                             {"node_id": "b" * 8, "alive": False, "resources": {}}]

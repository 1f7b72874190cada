"""The explorer's JSON API and pages on a ledger of real signed blocks (tests/builders.py), no browser, no Ray."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dlbc_ray import crypto
from dlbc_ray.cli.chain import block_row
from dlbc_ray.explorer import LiveState, create_app
from dlbc_ray.runtime.home import Home, open_home
from dlbc_ray.ledger import Chain
from dlbc_ray.schema import DatasetSpec, ModelSpec, Task
from tests.builders import T0, World, fake_hash

EVIL = "<script>alert(1)</script>"


def evil_task(world: World) -> object:
    """A task whose every free-text field a requester controls holds markup."""
    world.nonce += 1
    dataset = DatasetSpec(name=EVIL, uri="<img src=x onerror=alert(2)>.npz", train_hash=fake_hash("train"),
                          test_hash=fake_hash("test"), n_train=100, n_test=20, input_shape=(1, 8, 8), n_classes=10)
    task = Task(requester=world.requester.public_key, nonce=world.nonce, dataset=dataset, target=5_000, reward=1_000,
                model=ModelSpec(name="mlp", params={"<b>": "</td><script>alert(3)</script>"}),
                deadline_ms=T0 + 10**9, max_epochs=3, created_ms=T0)
    return world.sign(world.requester, task)


@pytest.fixture(scope="module")
def world_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Home, World, list[str]]:
    home = open_home(tmp_path_factory.mktemp("explorer-home"))
    world = World()
    chain = Chain.open(home.ledger)
    chain.import_block(world.genesis)
    task_ids = []
    for task in (world.task(), evil_task(world)):
        block, signed = world.round({0: [9000, 9000, 9000, 9000], 1: [8000, 8000, 8000, 8000]}, task=task)
        chain.import_block(block)
        world.apply(block)
        task_ids.append(crypto.message_hash(signed.message))
    chain.close()
    return home, world, task_ids


@pytest.fixture(scope="module")
def client(world_home: tuple[Home, World, list[str]]) -> TestClient:
    return TestClient(create_app(world_home[0], LiveState()))


def test_chain_rows_have_the_cli_json_shape(client: TestClient, world_home: tuple[Home, World, list[str]]) -> None:
    rows = client.get("/api/chain").json()
    chain = Chain.open(world_home[0].ledger, create=False, verify=False)
    expected = [block_row(b) for b in chain.blocks()]
    chain.close()
    assert [r["height"] for r in rows] == [0, 1, 2]
    for row, cli in zip(rows, expected):
        assert {k: row[k] for k in cli} == cli


def test_block_shows_each_submission_with_every_validators_vote(client: TestClient) -> None:
    block = client.get("/api/blocks/1").json()
    assert block["verifies"] is True and block["verify_error"] is None
    assert len(block["submissions"]) == 2
    assert all(len(s["votes"]) == 4 and {v["verdict"] for v in s["votes"]} == {"valid"} for s in block["submissions"])
    assert {p["role"] for p in block["payouts"]} >= {"winner", "validator"}
    page = client.get("/blocks/1")
    assert page.status_code == 200 and page.text.count('class="vote"') == 8


def test_task_balances_history_charts_network_shapes(client: TestClient, world_home: tuple[Home, World, list[str]]) -> None:
    home, world, task_ids = world_home
    task = client.get(f"/api/tasks/{task_ids[0][:10]}").json()
    assert task["task_id"] == task_ids[0] and task["status"] == "done" and task["height"] == 1
    assert task["score"] == 0.9 and task["spec"]["model"]["name"] == "mlp" and task["live"]["curve"] == {}
    balances = client.get("/api/accounts").json()
    assert set(balances) >= {"height", "supply", "escrow", "accounts"}
    assert sum(a["balance"] for a in balances["accounts"]) + balances["escrow"] == balances["supply"]
    history = client.get(f"/api/accounts/{world.requester.public_key}").json()
    assert [e["kind"] for e in history["history"]] == ["escrow", "escrow", "mint"]
    charts = client.get("/api/charts").json()
    assert [p["height"] for p in charts["accuracy"]] == [1, 2]
    assert client.get("/api/network").json()["up"] is False
    assert set(client.get("/api/openapi.json").json()["paths"]) >= {"/api/chain", "/api/blocks/{height}",
                                                                   "/api/tasks/{task_id}", "/api/accounts"}


def test_live_curve_appears_on_the_task(world_home: tuple[Home, World, list[str]]) -> None:
    home, _, task_ids = world_home
    live = LiveState(source="demo")
    actor = {"name": "miner-0", "stage": "epoch", "epochs": 3, "val_accuracy": 0.5}
    for epoch, acc in [(1, 0.5), (2, 0.7), (2, 0.72)]:
        live.observe_rounds([{"task_id": task_ids[0], "phase": "collect",
                              "actors": {"m": {**actor, "epoch": epoch, "val_accuracy": acc}}}])
    view = TestClient(create_app(home, live)).get(f"/api/tasks/{task_ids[0]}").json()
    assert view["live"]["curve"] == {"miner-0": [[1, 0.5], [2, 0.72]]}
    assert view["live"]["round"]["phase"] == "collect"


@pytest.mark.parametrize("path", ["/no/such/page", "/blocks/99", "/blocks/minus", "/tasks/abc", "/tasks/" + "f" * 64,
                                  "/accounts/nobody"])
def test_wrong_urls_give_a_404_page(client: TestClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "Not found" in page.text and "Traceback" not in page.text
    api = client.get("/api" + path)
    assert api.status_code in (404, 422) and api.json()["error"] in ("not_found", "bad_request")


def test_task_file_strings_are_escaped(client: TestClient, world_home: tuple[Home, World, list[str]]) -> None:
    evil = world_home[2][1]
    for path in (f"/tasks/{evil}", "/tasks"):
        page = client.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text and "<b>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get(f"/api/tasks/{evil}").json()["spec"]["dataset"]["name"] == EVIL  # JSON keeps the data as is


def test_missing_ledger_is_a_clear_503(tmp_path: Path) -> None:
    client = TestClient(create_app(open_home(tmp_path / "empty-home")))
    page = client.get("/")
    assert page.status_code == 503 and "No ledger to show" in page.text and "dlbc-ray demo" in page.text
    assert client.get("/api/chain").json()["error"] == "ledger_unavailable"
    assert not (tmp_path / "empty-home" / "ledger.sqlite").exists()


@pytest.mark.parametrize("damage", ["garbage", "block_body"])
def test_corrupt_ledger_is_a_clear_500(world_home: tuple[Home, World, list[str]], tmp_path: Path, damage: str) -> None:
    home = open_home(tmp_path / "home")
    home.ledger.write_bytes(world_home[0].ledger.read_bytes())
    if damage == "garbage":
        home.ledger.write_bytes(b"not a database" * 512)
    else:
        con = sqlite3.connect(home.ledger)
        con.execute("UPDATE blocks SET body = ? WHERE height = 2", (b'{"header": 1}',))
        con.commit()
        con.close()
    client = TestClient(create_app(home), raise_server_exceptions=False)
    page = client.get("/")
    assert page.status_code == 500 and "The ledger cannot be read" in page.text and "Traceback" not in page.text
    assert client.get("/api/chain").json()["error"] == "corrupt_ledger"


def test_the_explorer_never_writes_the_ledger(world_home: tuple[Home, World, list[str]], tmp_path: Path) -> None:
    home = open_home(tmp_path / "ro-home")
    home.ledger.write_bytes(world_home[0].ledger.read_bytes())
    home.ledger.chmod(0o444)
    before = home.ledger.read_bytes()
    client = TestClient(create_app(home))
    for path in ("/", "/blocks/2", "/tasks", "/accounts", "/charts", "/api/chain"):
        assert client.get(path).status_code == 200
    assert home.ledger.read_bytes() == before
    assert client.post("/api/chain").status_code == 405

"""Several Ray nodes on one machine: cluster.yaml's node types, for real (a GCS, one raylet per node, 127.0.0.1).

``ray.cluster_utils.Cluster`` needs a Ray session of its own, and the suite shares one (tests/conftest.py),
so the scenario runs in a subprocess (``python -m tests.integration.test_multinode OUT``) that stands up:

  head           CPU only: the driver, Ledger and Consensus (pinned there by ``service.up``)
  cpu-validator  x2, ``dlbc_validator: 2`` each (4 validators, f = 1)
  gpu-a, gpu-b   ``dlbc_miner: 2`` and a fake ``GPU: 1`` each: 4 miners at 0.5 GPU, one PACK group

then brings a network up with ``service.up(address="auto")`` (what ``dlbc-ray up --address auto`` runs), mines a round,
removes a miner node mid-round, removes a validator node (2 > f validators), adds a validator node, and
records what it saw as JSON; the tests below judge those facts. Token auth stays on throughout.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO_TIMEOUT_S = 540  # under pytest-timeout's 600 s, so the scenario's own error is what shows
NODE_TYPES: dict[str, dict[str, float]] = {  # cluster.yaml's types, scaled down to one machine
    "cpu-validator-a": {"dlbc_validator": 2},
    "cpu-validator-b": {"dlbc_validator": 2},
    "gpu-a": {"dlbc_miner": 2, "GPU": 1},
    "gpu-b": {"dlbc_miner": 2, "GPU": 1},
}
TASK = """
model: {{name: mlp, params: {{hidden: [32]}}}}
dataset: digits
target: 0.5
reward: 100
deadline: 900
max_epochs: {epochs}
"""


# ----------------------------------------------------------------- the scenario (subprocess)


def _node_args(resources: dict[str, float]) -> dict[str, Any]:
    custom = {k: v for k, v in resources.items() if k != "GPU"}
    return {"num_cpus": 1, "num_gpus": int(resources.get("GPU", 0)), "resources": custom,
            "node_ip_address": "127.0.0.1", "include_dashboard": False, "object_store_memory": 80 * 2**20}


def _config() -> Any:
    from dlbc_ray.config import ConsensusConfig, MinerConfig, NetworkConfig, TaskDefaults, ValidatorConfig

    return NetworkConfig(
        miners=4, validators=4, miner=MinerConfig(num_cpus=0.25, num_gpus=0.5, max_restarts=0),
        validator=ValidatorConfig(num_cpus=0.0, max_restarts=-1),  # come back wherever a node has room
        # 40 s: a validator restarted on a new node pays its cold imports in its first ballot (2 shared cores)
        consensus=ConsensusConfig(collect_timeout_s=120, validate_timeout_s=40, commit_timeout_s=20,
                                  max_attempts=1, tick_s=0.2),
        task=TaskDefaults(epochs=1, target=0.5))


def _where(node_types: dict[str, str]) -> dict[str, str]:
    """Each live named actor's node type, read from the GCS actor table (node ids, not guesses)."""
    import ray

    placed = {}
    for info in ray._private.state.actors().values():
        if info.get("Name") and info["State"] == "ALIVE":
            placed[info["Name"]] = node_types.get(info["Address"]["NodeID"], info["Address"]["NodeID"])
    return placed


def _placement_groups(node_types: dict[str, str]) -> list[dict[str, Any]]:
    from ray.util import placement_group_table

    return [{"name": pg["name"], "strategy": pg["strategy"], "state": pg["state"],
             "nodes": [node_types.get(n, n) for n in pg.get("bundles_to_node_id", {}).values()]}
            for pg in placement_group_table().values()]


def _submit(home: Any, root: Path, epochs: int) -> str:
    from dlbc_ray.runtime import client

    path = root / f"task-{time.time_ns()}.yaml"
    path.write_text(TASK.format(epochs=epochs))
    return client.submit(home, path, requester="requester", address=None)


def _summary(home: Any, view: dict[str, Any]) -> dict[str, Any]:
    from dlbc_ray.runtime import client

    names = client.names(home)
    report = view.get("report") or {}
    return {"status": view["status"], "committed": report.get("committed"), "failure": report.get("failure", ""),
            "height": report.get("height"), "block": report.get("block_hash"),
            "winner": names.get(report.get("winner") or "", None),
            "outcomes": {names.get(o["miner"], o["miner"]): o["verdict"] for o in report.get("outcomes", [])}}


def _training_on(consensus: Any, miners: list[str], timeout_s: float) -> bool:
    """Wait until every named miner reports a finished epoch of the round in flight."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rounds = ray.get(consensus.rounds.remote(), timeout=30)
        if rounds and all(rounds[0].actors.get(m) is not None and rounds[0].actors[m].epoch >= 1 for m in miners):
            return True
        time.sleep(0.1)
    return False


@dataclass
class Scenario:
    """The cluster, its nodes by type name, and what was seen so far."""

    root: Path
    home: Any
    cluster: Any
    nodes: dict[str, Any]
    facts: dict[str, Any] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    def types(self) -> dict[str, str]:
        return {node.node_id: name for name, node in self.nodes.items()}

    def round(self, key: str, task: str | None = None, epochs: int = 1) -> None:
        from dlbc_ray.runtime import client

        task = task or _submit(self.home, self.root, epochs)
        self.facts[key] = _summary(self.home, client.wait_for(self.home, task, address=None, timeout_s=240))
        self.facts.setdefault("seconds", {})[key] = round(time.monotonic() - self.t0, 1)


def _up(sc: Scenario) -> None:
    import ray

    from dlbc_ray.runtime import service

    # "auto", as README's `dlbc-ray up --address auto` on a head: Ray finds this cluster through the address file
    # in this process's private RAY_TMPDIR, never another session's cluster.
    service.up(_config(), sc.home, address="auto")
    sc.facts["gcs"] = {"cluster": sc.cluster.address, "joined": ray.get_runtime_context().gcs_address}
    sc.facts["placed"] = _where(sc.types())
    sc.facts["groups"] = _placement_groups(sc.types())
    sc.round("round_all")


def _lose_miner_node(sc: Scenario) -> None:
    """gpu-b goes while its miners train (they finished an epoch); the round is left to gpu-a's."""
    import ray

    from dlbc_ray.actors.names import CONSENSUS_NAME, NAMESPACE

    on_b = sorted(n.removeprefix("dlbc-miner-") for n, t in sc.facts["placed"].items() if t == "gpu-b")
    task = _submit(sc.home, sc.root, 6)
    sc.facts["training_on_b"] = _training_on(ray.get_actor(CONSENSUS_NAME, namespace=NAMESPACE), on_b, 120)
    sc.cluster.remove_node(sc.nodes.pop("gpu-b"))
    sc.facts["miners_lost"] = on_b
    sc.round("round_miner_node_lost", task)


def _lose_validators_then_add_a_node(sc: Scenario) -> None:
    """2 of 4 validators go (> f = 1): the round fails. A new node takes them back: the next round commits."""
    from dlbc_ray.runtime import client

    sc.cluster.remove_node(sc.nodes.pop("cpu-validator-b"))
    sc.round("round_validators_lost")
    sc.nodes["cpu-validator-c"] = sc.cluster.add_node(**_node_args(NODE_TYPES["cpu-validator-b"]))
    deadline = time.monotonic() + 120
    while True:
        status = client.status(sc.home, address=None)
        back = all("error" not in h for n, h in status["health"].items() if n.startswith("validator"))
        if back or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    sc.facts["status_health"] = {n: "error" not in h for n, h in status["health"].items()}
    types = sc.types()
    sc.facts["status_nodes"] = sorted(types.get(n["node_id"], n["node_id"]) for n in status["nodes"] if n["alive"])
    sc.facts["status_node_resources"] = {types[n["node_id"]]: n["resources"] for n in status["nodes"]
                                         if n["alive"] and n["node_id"] in types}
    sc.facts["placed_after_add"] = _where(sc.types())
    sc.round("round_node_added")


def _chain(sc: Scenario) -> None:
    from dlbc_ray.runtime import client
    from dlbc_ray.consensus import compute_block_hash
    from dlbc_ray.ledger import verify_chain

    sc.facts["chain_height"] = verify_chain(sc.home.ledger).height  # every block from genesis re-validated
    chain = client.open_chain(sc.home)
    sc.facts["chain_blocks"] = {str(h.height): compute_block_hash(h) for h in chain.headers()}
    chain.close()


def scenario(root: Path) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    from dlbc_ray.runtime import service
    from dlbc_ray.runtime.home import open_home
    from dlbc_ray.runtime.localhead import keep_loopback_driver
    from dlbc_ray.runtime.network import ensure_home_token

    home = open_home(root / "home")
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(ensure_home_token(home))
    keep_loopback_driver()
    cluster = Cluster(initialize_head=True, head_node_args=_node_args({}))
    nodes = {"head": cluster.head_node} | {name: cluster.add_node(**_node_args(r)) for name, r in NODE_TYPES.items()}
    sc = Scenario(root, home, cluster, nodes, facts={"auth_mode": os.environ["RAY_AUTH_MODE"]})
    try:
        for stage in (_up, _lose_miner_node, _lose_validators_then_add_a_node, _chain):
            stage(sc)
    finally:
        try:
            service.down(home)
        finally:
            ray.shutdown()
            cluster.shutdown()
    return sc.facts


def main(out: str) -> None:
    with tempfile.TemporaryDirectory(prefix="dlbc-mn-", dir="/tmp") as tmp:
        # Sockets under the temp dir stay short; the address file stays private (other sessions use `auto`).
        os.environ["RAY_TMPDIR"] = tmp
        Path(out).write_text(json.dumps(scenario(Path(tmp))))


# --------------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("multinode") / "facts.json"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    done = subprocess.run([sys.executable, "-m", "tests.integration.test_multinode", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S)
    if done.returncode != 0 or not out.exists():
        pytest.fail(f"multi-node scenario failed (rc {done.returncode}):\n{done.stderr[-4000:]}")
    facts = json.loads(out.read_text())
    print(f"multi-node scenario: seconds since start per stage {facts.get('seconds')}")
    return facts


def test_token_auth_stays_on_and_up_auto_joins_this_cluster(facts: dict[str, Any]) -> None:
    assert facts["auth_mode"] == "token"
    assert facts["gcs"]["joined"] == facts["gcs"]["cluster"], facts["gcs"]


def test_each_actor_lands_on_a_node_of_its_type(facts: dict[str, Any]) -> None:
    placed = facts["placed"]
    assert placed["dlbc-ledger"] == "head" and placed["dlbc-consensus"] == "head"
    miners = {n: t for n, t in placed.items() if n.startswith("dlbc-miner-")}
    validators = {n: t for n, t in placed.items() if n.startswith("dlbc-validator-")}
    assert len(miners) == 4 and set(miners.values()) <= {"gpu-a", "gpu-b"}, placed
    assert len(validators) == 4 and set(validators.values()) <= {"cpu-validator-a", "cpu-validator-b"}, placed
    # Per node no more than it advertises: 2 miners (2 x 0.5 fake GPU), 2 validators.
    assert all(list(miners.values()).count(t) == 2 for t in ("gpu-a", "gpu-b")), placed
    assert all(list(validators.values()).count(t) == 2 for t in ("cpu-validator-a", "cpu-validator-b")), placed


def test_a_miner_group_is_one_pack_placement_group_on_miner_nodes(facts: dict[str, Any]) -> None:
    groups = facts["groups"]
    assert len(groups) == 1 and groups[0]["strategy"] == "PACK" and groups[0]["state"] == "CREATED", groups
    # PACK fills a node before the next: 4 bundles of 1 dlbc_miner on 2-slot nodes take exactly 2 nodes.
    assert sorted(groups[0]["nodes"]) == ["gpu-a", "gpu-a", "gpu-b", "gpu-b"], groups
    miners = sorted(t for n, t in facts["placed"].items() if n.startswith("dlbc-miner-"))
    assert miners == sorted(groups[0]["nodes"])  # the miners sit in their bundles


def test_a_round_on_the_whole_cluster_commits(facts: dict[str, Any]) -> None:
    first = facts["round_all"]
    assert first["status"] == "done" and first["committed"], first
    assert len(first["outcomes"]) == 4, first


def test_losing_a_miner_node_mid_round_leaves_the_round_to_the_rest(facts: dict[str, Any]) -> None:
    assert facts["training_on_b"], "the miners of gpu-b never trained before their node went"
    lost, after = set(facts["miners_lost"]), facts["round_miner_node_lost"]
    assert after["status"] == "done" and after["committed"], after
    assert after["winner"] is not None and after["winner"] not in lost, after
    assert all(after["outcomes"].get(m) in (None, "failed") for m in lost), after
    assert after["height"] > facts["round_all"]["height"]
    assert facts["chain_blocks"][str(after["height"])] == after["block"]  # still on chain, as reported


def test_losing_validators_beyond_f_fails_the_round_with_its_reason(facts: dict[str, Any]) -> None:
    failed = facts["round_validators_lost"]
    assert failed["status"] == "failed" and not failed["committed"], failed
    assert "quorum" in failed["failure"] or "validator" in failed["failure"], failed


def test_an_added_node_shows_in_status_and_the_next_round_uses_it(facts: dict[str, Any]) -> None:
    assert "cpu-validator-c" in facts["status_nodes"] and "cpu-validator-b" not in facts["status_nodes"]
    assert facts["status_node_resources"]["cpu-validator-c"].get("dlbc_validator") == 2  # `status` names what it adds
    assert all(facts["status_health"][f"validator-{i}"] for i in range(4)), facts["status_health"]
    moved = [n for n, t in facts["placed_after_add"].items() if t == "cpu-validator-c"]
    assert len(moved) == 2 and all(n.startswith("dlbc-validator-") for n in moved), facts["placed_after_add"]
    last = facts["round_node_added"]
    # A quorum is 2f + 1 = 3 of 4 votes, and cpu-validator-a holds only 2: the new node voted.
    assert last["status"] == "done" and last["committed"], last
    assert last["height"] > facts["round_miner_node_lost"]["height"], last


def test_no_block_is_lost(facts: dict[str, Any]) -> None:
    """The chain re-validates from genesis, and every block a round reported committed is on it, unchanged."""
    committed = [r for k, r in facts.items() if k.startswith("round_") and r["committed"]]
    assert len(committed) == 3 and facts["chain_height"] == facts["round_node_added"]["height"]
    assert all(facts["chain_blocks"][str(r["height"])] == r["block"] for r in committed), committed


if __name__ == "__main__":
    main(sys.argv[1])

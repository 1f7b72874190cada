"""cluster.yaml passes Ray's own cluster-config validation and keeps our security rules.

Ray's `ray up` runs `prepare_config` (merge the provider's defaults, merge setup commands,
fill min/max workers) and then `validate_config` (the JSON schema ray-schema.json plus
cross-field checks) before it asks the provider for anything. We run exactly those two
steps. The provider is not contacted: nothing here can reach AWS, and the steps after
validation (`fillout_available_node_types_resources`, `bootstrap_config`) need boto3 and
credentials, so they are left to `ray up`.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
TOKEN_ENV = ("RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN_PATH=")


def raw() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def prepared(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `ray up` validates: our file merged with Ray's AWS defaults."""
    return prepare_config(copy.deepcopy(config if config is not None else raw()))


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def pinned_torch() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("torch==")]
    return pin


def setup_of(config: dict[str, Any], node_type: str) -> list[str]:
    """The setup commands `ray up` runs on a node of this type (after prepare_config)."""
    if node_type == config["head_node_type"]:
        return config["head_setup_commands"]
    return config["available_node_types"][node_type].get("worker_setup_commands", config["worker_setup_commands"])


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # file_mounts are relative to where `ray up` runs: the repository root


# ------------------------------------------------------------ Ray's validation


def test_ray_validates_the_prepared_config() -> None:
    validate_config(prepared())


def test_ray_validation_is_not_a_no_op() -> None:
    """The same validator rejects a config broken in one place."""
    broken = raw()
    broken["available_node_types"]["gpu-1x"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepared(broken))
    too_many = raw()
    too_many["available_node_types"]["cpu-validator"]["min_workers"] = too_many["max_workers"] + 1
    with pytest.raises(ValueError, match="smaller than the sum of `min_workers`"):
        validate_config(prepared(too_many))


# ------------------------------------------------------------------- security


def test_nothing_binds_to_all_interfaces() -> None:
    """No 0.0.0.0 in any value `ray up` would use, Ray's merged defaults included."""
    config = prepared()
    assert not [s for s in strings(config) if "0.0.0.0" in s]
    code_lines = [line.split("#", 1)[0] for line in CLUSTER_YAML.read_text().splitlines()]
    assert not [line for line in code_lines if "0.0.0.0" in line]


def test_the_check_above_catches_ray_defaults() -> None:
    """Without our head start command, Ray's AWS default would bind the dashboard to 0.0.0.0."""
    config = raw()
    del config["head_start_ray_commands"]
    assert any("--dashboard-host=0.0.0.0" in s for s in strings(prepared(config)))


def test_dashboard_binds_to_the_heads_private_address() -> None:
    (start,) = [c for c in prepared()["head_start_ray_commands"] if "ray start --head" in c]
    assert re.search(r"--dashboard-host=\$\(hostname -I \| cut -d' ' -f1\)", start)
    assert "--dashboard-port=8265" in start


def test_every_ray_start_uses_token_auth_with_a_synced_token() -> None:
    config = prepared()
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assert all(env in command for env in TOKEN_ENV), command
        token_path = re.search(r"RAY_AUTH_TOKEN_PATH=(\S+)", command).group(1)  # type: ignore[union-attr]
        token_dir = str(Path(token_path.replace("$HOME", "~")).parent)
        assert token_dir in config["file_mounts"], f"{token_dir} is not synced to the nodes"


# ---------------------------------------------------------------- node types


def test_gpu_workers_advertise_one_miner_slot_per_gpu() -> None:
    types = prepared()["available_node_types"]
    gpu = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert len(gpu) >= 2 and {t["resources"]["GPU"] for t in gpu.values()} >= {1, 4}
    for t in gpu.values():
        assert t["resources"]["dlbc_miner"] == t["resources"]["GPU"]
        assert t["min_workers"] <= t["max_workers"] and t["max_workers"] >= 1


def test_validators_have_a_cpu_node_type_and_miners_never_land_there() -> None:
    config = prepared()
    types = config["available_node_types"]
    validators = {name: t for name, t in types.items() if t["resources"].get("dlbc_validator", 0) > 0}
    assert validators and all(t["resources"].get("GPU", 0) == 0 for t in validators.values())
    assert all("dlbc_miner" not in t["resources"] for t in validators.values())
    head = types[config["head_node_type"]]
    assert head["max_workers"] == 0 and "GPU" not in head["resources"] and "dlbc_miner" not in head["resources"]


# ---------------------------------------------------------------------- setup


def test_every_node_installs_the_pinned_torch_before_the_package() -> None:
    config, pin = prepared(), pinned_torch()
    for name, node_type in config["available_node_types"].items():
        commands = setup_of(config, name)
        torch_at = [i for i, c in enumerate(commands) if f"install {pin}" in c]
        package_at = [i for i, c in enumerate(commands) if c.endswith("install ~/dlbc-ray")]
        assert torch_at and package_at and torch_at[0] < package_at[0], name
        is_gpu = node_type["resources"].get("GPU", 0) > 0
        assert ("whl/cpu" in commands[torch_at[0]]) is not is_gpu, f"{name}: wrong torch build"


def test_file_mounts_exist_in_the_repository() -> None:
    mounts = prepared()["file_mounts"]
    repo_sources = [local for local in mounts.values() if not local.startswith("~")]
    assert repo_sources and all((REPO / local).exists() for local in repo_sources)
    assert {"./dlbc_ray", "./pyproject.toml"} <= set(repo_sources)

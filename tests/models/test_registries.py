"""Each extension point is one registry: a new fusion rule or dataset format is one registration in one file,
and a task file can name it, the signed task carries it, admission accepts it and the network uses it.
Unregistered names are refused by name, at the task file and at admission."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dlbc_ray.config import Limits
from dlbc_ray.crypto import Identity, hash_weights
from dlbc_ray.errors import InvalidTask
from dlbc_ray.models import baas_fusion, formats, fusion
from dlbc_ray.models.data import load_file
from dlbc_ray.models.nets import build_net
from dlbc_ray.models.weights import to_numpy
from dlbc_ray.runtime.taskfile import load_task_with_data, read_task_file, to_task
from dlbc_ray.schema import FusionVote
from tests.builders import fake_hash

REQUESTER = Identity.from_seed("requester", b"requester")
TASK = "model: {{name: mlp, params: {{hidden: [8]}}}}\ndataset: {dataset}\ntarget: 0.1\nreward: 10\ndeadline: 60\n" \
       "max_epochs: 1\nfusion: {fusion}\n"


@pytest.fixture
def midrange() -> Iterator[str]:
    """A rule a user adds in one file: per coordinate, the mean of the lowest and highest value."""

    def merge(raw: list[dict[str, np.ndarray]], _: list[int]) -> dict[str, np.ndarray]:
        return {k: ((np.min([w[k] for w in raw], axis=0) + np.max([w[k] for w in raw], axis=0)) / 2
                    ).astype(raw[0][k].dtype) for k in raw[0]}

    fusion.register_fusion_rule(fusion.FusionRule("midrange", merge))
    yield "midrange"
    del fusion.FUSION_RULES["midrange"]


@pytest.fixture
def tsv() -> Iterator[str]:
    """A format a user adds in one file: tab-separated rows 'split label features...'."""

    def read_tsv(path: Path, limits: Limits) -> tuple[np.ndarray, ...]:
        rows = [line.split("\t") for line in path.read_text().splitlines() if line]
        train = np.array([r[1:] for r in rows if r[0] == "train"], dtype=np.float64)
        test = np.array([r[1:] for r in rows if r[0] == "test"], dtype=np.float64)
        return train[:, 1:], train[:, 0], test[:, 1:], test[:, 0]

    formats.register_dataset_format(formats.DatasetFormat(".tsv", read_tsv, ".tsv", size_first=True))
    yield ".tsv"
    del formats.DATASET_FORMATS[".tsv"]


def write_tsv(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    lines = [f"{'train' if i < n * 3 // 4 else 'test'}\t{i % 3}\t" + "\t".join(f"{v:.4f}" for v in rng.normal(size=4))
             for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_registered_fusion_rule_and_format_go_from_task_file_to_a_fused_vote(tmp_path: Path, midrange: str,
                                                                                tsv: str) -> None:
    write_tsv(tmp_path / "rows.tsv")
    (tmp_path / "task.yaml").write_text(TASK.format(dataset="rows.tsv", fusion=midrange))
    taskfile, bundle = load_task_with_data(tmp_path / "task.yaml")
    task = to_task(taskfile, REQUESTER.public_key, nonce=0, now_ms=1_000, bundle=bundle)
    assert (task.fusion, task.dataset.uri, task.dataset.n_train, task.dataset.n_classes) == (midrange, "rows.tsv", 30, 3)
    assert fusion.check_fusion_mode(task.fusion) is fusion.FUSION_RULES[midrange]  # what admission runs
    members = [to_numpy(build_net("mlp", {"hidden": [8]}, (4,), 3, seed=s)) for s in range(3)]
    scores = baas_fusion.fuse_and_score(task, [fusion.Contribution(weights=m) for m in members], bundle.test)
    first = next(iter(members[0]))
    expected = (np.min([m[first] for m in members], axis=0) + np.max([m[first] for m in members], axis=0)) / 2
    assert np.allclose(scores.weights[first], expected) and scores.fused_hash == hash_weights(scores.weights)
    vote = FusionVote(task_id=fake_hash("t"), round_id=fake_hash("r"), validator=REQUESTER.public_key, rule=task.fusion,
                      contributors=(fake_hash("a"), fake_hash("b")), fused_hash=scores.fused_hash, score=scores.score,
                      without=scores.without[:2])
    assert vote.rule == midrange


def test_unregistered_names_are_refused_by_name(tmp_path: Path) -> None:
    write_tsv(tmp_path / "rows.tsv")
    (tmp_path / "task.yaml").write_text(TASK.format(dataset="digits", fusion="midrange"))
    with pytest.raises(InvalidTask, match=r"task.yaml: fusion: unknown fusion 'midrange'; use winner or one of fedavg"):
        read_task_file(tmp_path / "task.yaml")
    with pytest.raises(InvalidTask) as admission:
        fusion.check_fusion_mode("midrange")
    assert admission.value.reason == "unknown_fusion"
    with pytest.raises(InvalidTask, match=r"rows.tsv: unknown dataset extension '.tsv'; use .npz, .csv, .parquet or "
                                          "an image folder") as info:
        load_file(tmp_path / "rows.tsv")
    assert info.value.reason == "bad_extension"


def test_a_registered_format_is_named_in_the_message_for_an_unknown_one(tmp_path: Path, tsv: str) -> None:
    (tmp_path / "x.h5").write_bytes(b"\0")
    with pytest.raises(InvalidTask, match=r"use .npz, .csv, .parquet, an image folder or .tsv"):
        load_file(tmp_path / "x.h5")


@pytest.mark.parametrize("name", ["", "Upper", "with space", "x" * 40, "winner", "median"])
def test_a_fusion_rule_name_must_fit_on_the_wire_and_be_new(name: str) -> None:
    with pytest.raises(ValueError):
        fusion.register_fusion_rule(fusion.FusionRule(name, lambda raw, _: raw[0]))


@pytest.mark.parametrize("suffix", ["tsv", ".TSV", ".", ".npz", "/"])
def test_a_format_suffix_is_a_lower_case_extension_and_new(suffix: str) -> None:
    with pytest.raises(ValueError):
        formats.register_dataset_format(formats.DatasetFormat(suffix, lambda path, limits: (), "x"))

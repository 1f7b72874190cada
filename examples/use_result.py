"""Use a model that the network trained for you, on raw inputs, with plain PyTorch.

    dlbc-ray submit examples/tasks/digits-mlp.yaml --wait     # prints the task id
    dlbc-ray result TASK_ID -o digits.safetensors
    python examples/use_result.py digits.safetensors          # accuracy on digits' test split

The file carries what is needed to rebuild the net (registry name, hyperparameters, input
shape, classes) in its safetensors metadata; the winner's Secure Mapping Layer is already
folded into the first layer, so no miner secret is involved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dlbc_ray.models.data import load_builtin
from dlbc_ray.models.nets import build_net


def load_model(path: Path) -> torch.nn.Module:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    net = build_net(meta["model"], json.loads(meta["params"]), tuple(json.loads(meta["input_shape"])),
                    int(meta["n_classes"]))
    net.load_state_dict(load_file(str(path)))
    return net.eval()


def main(path: Path, dataset: str = "digits") -> None:
    net = load_model(path)
    test = load_builtin(dataset).test  # the same split validators held back
    with torch.no_grad():
        predicted = net(torch.as_tensor(test.x)).argmax(dim=1)
    accuracy = (predicted == torch.as_tensor(test.y)).float().mean().item()
    print(f"{path.name}: {accuracy:.4f} accuracy on {len(test.y)} raw {dataset} test examples")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])

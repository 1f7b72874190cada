"""What each actor's process imports before its first call (fresh interpreters, no Ray cluster).

On 2 cores every second of CPU an actor spends importing is half a second more before the first
block. The ledger needs neither torch nor NumPy's scientific stack; no actor module loads scipy
or scikit-learn at import (the consensus actor imports the validator and miner modules too: Ray
loads an actor's class to deserialize its handle, so whatever those import, it imports).
"""

from __future__ import annotations

import ast
import subprocess
import sys

HEAVY = ("torch", "pytorch_lightning", "lightning", "torchmetrics", "scipy", "sklearn", "matplotlib")


def loaded_after(statement: str) -> list[str]:
    code = f"import sys; {statement}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_the_ledger_actor_imports_no_torch_and_no_scientific_stack() -> None:
    assert loaded_after("import dlbc_ray.actors.ledger") == []


def test_actor_modules_load_neither_scipy_nor_sklearn_nor_lightning() -> None:
    """Validators load scipy at their first weight matching; miners Lightning in ``Miner.__init__``."""
    loaded = loaded_after("import dlbc_ray.actors.coordinator, dlbc_ray.actors.validator, dlbc_ray.actors.miner")
    assert loaded == ["torch"]

"""A validator's first audit, in a fresh process, never imports torch._dynamo.

torch._dynamo (with sympy and TorchInductor behind it) costs about 1.3 s of CPU per process: with
four validators that is seconds before the first block on two cores. A real miner's transcript is
made here (Lightning, which imports dynamo, so in this process); a fresh interpreter then does what
a validator does with it: import the validator's modules, derive the run (mapping layer, mark,
settle), audit every segment bit for bit, and reports what it imported.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

from dlbc_ray import crypto
from dlbc_ray.actors.miner import Miner
from dlbc_ray.config import MINIMAL
from dlbc_ray.consensus.transcript import compute_hyperparameters
from dlbc_ray.crypto import Identity
from dlbc_ray.models.data import load_builtin
from dlbc_ray.models.protect import mapping_seed, mark_secret
from dlbc_ray.models.replay import Secrets
from dlbc_ray.runtime.network import make_task
from dlbc_ray.schema.round_messages import RoundContext, WindowClose
from tests.builders import T0, fake_hash, signed_round

REQUESTER, MINER = (Identity.from_seed(n, n.encode()) for n in ("requester", "startup-miner"))
PROPOSER = Identity.from_seed("consensus", b"consensus")
CHAIN, CFG = fake_hash("chain"), MINIMAL.miner

AUDIT = """
import pickle, sys
import dlbc_ray.actors.validator  # what a validator's process imports as it starts
from dlbc_ray.models.replay import Committed, audit, derive_for
case = pickle.load(open(sys.argv[1], "rb"))
header, root = case["openings"][0][0], case["openings"][0][1]
committed = Committed(case["submission"].transcript_root, header, root, lambda i: case["openings"][i][2])
derived = derive_for(case["task"], case["ctx"].task_id, case["ctx"].round_id, case["train"], case["submission"],
                     case["secrets"], case["hyper"])
params = case["secrets"].protection.transcript.model_copy(update={"segments": len(case["openings"])})
outcome, cost = audit(committed, derived, params, b"v" * 32)
print(outcome.passed, cost.replayed_steps, header.steps, "torch._dynamo" in sys.modules, "torch._inductor" in sys.modules)
"""


def test_a_validators_full_audit_of_a_real_transcript_imports_no_dynamo(tmp_path: Path) -> None:
    bundle = load_builtin("digits")
    task = make_task(REQUESTER, MINIMAL.task, bundle, nonce=1, created_ms=T0, chain_id=CHAIN)
    ctx = RoundContext(chain_id=CHAIN, round_id=fake_hash("round"), task_id=crypto.message_hash(task.message),
                       base_height=1, base_hash=fake_hash("head"), eval_seed=0, submit_deadline_ms=T0 + 60_000)
    miner = Miner(CFG, identity=MINER, protection=MINIMAL.protection, proposer=PROPOSER.public_key)
    mined, _ = miner.mine(task, bundle.train, signed_round(PROPOSER, ctx))
    submission = mined.signed.message
    close = crypto.sign(PROPOSER, WindowClose(task_id=ctx.task_id, round_id=ctx.round_id, closed_ms=T0 + 60_000,
                                              opens=(submission.commit,), final=True), CHAIN)
    header = miner.transcript_opening(close, submission.commit, 0)[0]
    openings = [miner.transcript_opening(close, submission.commit, i) for i in range(MINIMAL.protection.transcript.max_checkpoints)]
    openings = [o for o in openings if o[2] is not None]
    assert header.steps > 0 and len(openings) > 2
    secrets = Secrets(sml_seed=mapping_seed(MINER, ctx.task_id, ctx.round_id), mark=mark_secret(MINER),
                      protection=MINIMAL.protection)
    assert secrets.protection.watermark  # the audit's finish runs the mark's settle, as validators do
    case = tmp_path / "case.pkl"
    case.write_bytes(pickle.dumps({"task": task.message, "ctx": ctx, "train": bundle.train, "submission": submission,
                                   "secrets": secrets, "openings": openings,
                                   "hyper": compute_hyperparameters(CFG.batch_size, CFG.lr, CFG.optimizer,
                                                                    CFG.val_fraction)}))
    out = subprocess.run([sys.executable, "-c", AUDIT, str(case)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    passed, replayed, steps, dynamo, inductor = out.stdout.split()
    assert passed == "True" and replayed == steps, out.stdout  # every step replayed, bit for bit
    assert (dynamo, inductor) == ("False", "False"), "a validator's audit imported torch._dynamo / torch._inductor"

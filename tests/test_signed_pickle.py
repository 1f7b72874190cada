"""A signed message crosses a process boundary (Ray pickles it) as the receiver's own ``Signed[T]``.

CI once failed the attack suite in one test order of many: a test module wrote
``Signed[WindowClose]`` at module level, so pydantic named the class after that module and
pickle referred to it by that name; a miner that had already made its own
``Signed[WindowClose]`` imported the module, found no such name, and could not unpickle the
proposer's window close, so its reveal failed and validators voted its honest model
``bad_reveal``. The test plays exactly that, in two fresh interpreters.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle

from dlbc_ray import crypto
from dlbc_ray.schema.round_messages import WindowClose
from dlbc_ray.schema.signed import Signed
from tests.builders import World, fake_hash

SENDER = """
import sys, cloudpickle
sys.path.insert(0, {folder!r})
import user_module  # parametrizes Signed[WindowClose] at module level, first in this process
from dlbc_ray import crypto
from dlbc_ray.schema.round_messages import WindowClose
close = WindowClose(task_id="a" * 64, round_id="b" * 64, closed_ms=1, opens=(), final=False)
signed = crypto.sign(crypto.Identity.from_seed("proposer", b"p"), close, "c" * 64)
assert type(signed) is user_module.ALIAS
open({out!r}, "wb").write(cloudpickle.dumps(signed))
"""

RECEIVER = """
import pickle, sys
sys.path.insert(0, {folder!r})
from dlbc_ray.schema.round_messages import WindowClose
from dlbc_ray.schema.signed import Signed

def parse(value):  # as actors/inbound.py does: the receiver makes its own Signed[WindowClose] first
    return Signed[WindowClose].model_validate(value)

own = Signed[WindowClose]
signed = pickle.loads(open({out!r}, "rb").read())
assert type(signed) is own, (type(signed), type(signed).__module__)
assert parse(signed.model_dump()) == signed
print("ok", signed.message.round_id[:4])
"""


def test_a_signed_message_unpickles_as_the_receivers_own_class_whoever_named_it_first(tmp_path: Path) -> None:
    (tmp_path / "user_module.py").write_text(
        "from dlbc_ray.schema.round_messages import WindowClose\nfrom dlbc_ray.schema.signed import Signed\n"
        "ALIAS = Signed[WindowClose]\n")
    out = tmp_path / "signed.pkl"
    for script in (SENDER, RECEIVER):
        done = subprocess.run([sys.executable, "-c", script.format(folder=str(tmp_path), out=str(out))],
                              capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
        assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok bbbb"


def test_a_pickled_ballot_carries_no_class_and_round_trips_equal() -> None:
    world = World()
    block, _ = world.round({0: [9000] * 4, 1: [8000] * 4})
    ballot = block.ballots[0]
    data = cloudpickle.dumps(ballot)
    assert len(data) < 3000  # the class went by value with each message before: 9 KiB a ballot
    again = pickle.loads(data)
    assert type(again) is type(ballot) and again == ballot
    assert pickle.loads(cloudpickle.dumps(block)) == block


def test_an_unparametrized_envelope_still_pickles() -> None:
    close = WindowClose(task_id=fake_hash("t"), round_id=fake_hash("r"), closed_ms=1, opens=(), final=False)
    signed = crypto.sign(crypto.Identity.from_seed("p", b"p"), close, fake_hash("chain"))
    bare = Signed.model_construct(**dict(signed))
    assert pickle.loads(pickle.dumps(bare)).signature == signed.signature

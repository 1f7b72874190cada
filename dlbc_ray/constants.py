"""Fixed protocol constants: changing one makes a different chain."""

from __future__ import annotations

# Scores (accuracy) travel as integers scaled by SCORE_SCALE: 4 decimal places.
# Validators round to this precision so honest validators agree to the last digit.
SCORE_SCALE = 10_000

ZERO_HASH = "0" * 64

# Fees are expressed in basis points of a task's reward.
BPS = 10_000

# Signing domains: one kind of signature can never pass as another.
TASK_DOMAIN = b"dlbc/task/v1"
SUBMISSION_DOMAIN = b"dlbc/submission/v1"
BALLOT_DOMAIN = b"dlbc/ballot/v1"  # one validator's judgement of a whole round
BLOCK_DOMAIN = b"dlbc/block/v1"
TRANSFER_DOMAIN = b"dlbc/transfer/v1"
REVEAL_DOMAIN = b"dlbc/reveal/v1"
CHAIN_DOMAIN = b"dlbc/chain/v1"
FUSION_VOTE_DOMAIN = b"dlbc/fusion-vote/v1"
WINDOW_CLOSE_DOMAIN = b"dlbc/window-close/v1"
ROUND_CONTEXT_DOMAIN = b"dlbc/round-context/v1"  # the proposer's word that a round of a task is open

# Counts a block may carry: bounded so that no block can exhaust a validator's memory.
MAX_VALIDATORS = 256
MAX_ACCOUNTS = 10_000
MAX_SUBMISSIONS = 1_024
MAX_TXS = 4_096
MAX_ROUND_HORIZON = 4_096

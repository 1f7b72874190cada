"""Durable chain storage: SQLite blocks, replay and verification, and the model artifact store."""

from dlbc_ray.ledger.artifacts import ArtifactStore, load_safetensors, save_safetensors
from dlbc_ray.ledger.chain import BlockImportResult, Chain, decode_block, stored_chain_id
from dlbc_ray.ledger.store import LedgerStore, StoredBlock, ledger_status
from dlbc_ray.ledger.verify import verify_chain

__all__ = [
    "ArtifactStore", "BlockImportResult", "Chain", "LedgerStore", "StoredBlock", "decode_block", "ledger_status",
    "load_safetensors", "save_safetensors", "stored_chain_id", "verify_chain",
]

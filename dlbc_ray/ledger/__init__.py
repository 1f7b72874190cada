"""Durable chain storage: SQLite blocks, replay and verification, and the model artifact store."""

from dlbc_ray.ledger.artifacts import ArtifactStore, load_safetensors, save_safetensors
from dlbc_ray.ledger.chain import BlockImportResult, Chain, decode_block, verify_chain
from dlbc_ray.ledger.store import LedgerStore, StoredBlock

__all__ = [
    "ArtifactStore", "BlockImportResult", "Chain", "LedgerStore", "StoredBlock", "decode_block",
    "load_safetensors", "save_safetensors", "verify_chain",
]

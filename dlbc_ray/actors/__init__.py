"""Thin Ray shells over the protocol: miner, validator, ledger and consensus.

Each is a plain class (tests build it directly); ``spawn`` makes it remote with
resources from config.
"""

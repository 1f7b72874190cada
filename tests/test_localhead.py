"""Which addresses get the loopback treatment (Ray would rewrite them to the machine's IP)."""

from __future__ import annotations

import pytest

from dlbc_ray.localhead import is_loopback


@pytest.mark.parametrize("address", ["127.0.0.1:6379", "127.0.1.1:1", "localhost:6379", "[::1]:6379"])
def test_loopback_addresses(address: str) -> None:
    assert is_loopback(address)


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "192.0.2.2:6379", "head.example:6379", "1127.0.0.1:1"])
def test_other_addresses_keep_rays_own_handling(address: str) -> None:
    assert not is_loopback(address)

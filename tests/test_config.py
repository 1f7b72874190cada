from __future__ import annotations

import pytest

from dlbc_ray.config import DEFAULT, MINIMAL, network_config
from dlbc_ray.errors import ConfigError


def test_presets_are_valid() -> None:
    assert DEFAULT.miners == 3 and DEFAULT.validators == 4
    assert MINIMAL.task.epochs < DEFAULT.task.epochs


@pytest.mark.parametrize("validators", [1, 2, 3])
def test_too_few_validators_for_one_fault_is_a_one_line_error(validators: int) -> None:
    with pytest.raises(ConfigError) as info:
        network_config(validators=validators)
    assert "n >= 3f + 1" in str(info.value) and "\n" not in str(info.value)


def test_zero_miners_names_the_field() -> None:
    with pytest.raises(ConfigError, match="^miners: "):
        network_config(miners=0)

"""Every explorer route fed odd path parameters and headers (Hypothesis): an answer of the right kind
(200, or a 4xx page/JSON naming the problem), never a 500 on a good ledger, never a traceback or a local
path beyond the home in the body, never anything written into the home."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlbc_ray.explorer import LiveState, create_app
from dlbc_ray.runtime.home import Home
from tests.explorer.test_api import world_home  # noqa: F401 -- the module fixture: a ledger of real blocks

ROUTES = ["/api/blocks/{}", "/api/tasks/{}", "/api/tasks/{}/model", "/api/accounts/{}", "/blocks/{}", "/tasks/{}",
          "/accounts/{}"]
ODD = ["", "-1", "0", "1", "99999999999999999999999", "nan", "1e309", "..", "../../etc/passwd", "%00", "\x00",
       "\udcff", "é" * 40, "x" * 5000, "0" * 64, "f" * 63, "requester", "validator-0", "consensus", "<script>"]


@pytest.fixture(scope="module")
def client(world_home: tuple[Home, object, list[str]]) -> TestClient:  # noqa: F811
    return TestClient(create_app(world_home[0], LiveState()), raise_server_exceptions=False)


def files(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and not p.name.endswith(("-wal",
                                                                                                         "-shm"))}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), value=st.one_of(st.sampled_from(ODD), st.text(max_size=30)),
       prefix=st.sampled_from(["", "ab" * 4]))
def test_odd_path_parameters_are_answered_by_name(client: TestClient, world_home: tuple[Home, object, list[str]],  # noqa: F811
                                                  route: str, value: str, prefix: str) -> None:
    home = world_home[0]
    before = files(home.root)
    text = (prefix + value).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    response = client.get(route.format(quote(text, safe="")))
    body = response.text
    assert response.status_code != 500 and response.status_code < 600, (route, text, body[:300])
    assert "Traceback" not in body and "File \"" not in body, (route, text, body[:300])
    assert len(body) < 2_000_000
    assert files(home.root) == before

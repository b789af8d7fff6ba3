"""Bad input everywhere: schemathesis fuzzes every operation of the OpenAPI schema.

Valid and invalid requests (up to 30 per operation, both generation modes) go over HTTP to the
real app backed by the Stripe sandbox, on SQLite and on PostgreSQL, with the admin token (so admin
operations do real work). No answer may be a 5xx, and every 4xx must carry a non-empty
``detail`` saying what is wrong (the parents' HTML pages: a message in words).
``POST /webhooks/stripe`` is fuzzed too: unsigned bodies are refused with 400s, which is what
it must do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis import GenerationMode
from tests.procs import temporary_postgres
from tests.standard_catalogue import migrate_with_catalogue

from basketball_api.app import create_app
from basketball_api.settings import Settings
from stripe_sandbox.app import create_app as create_sandbox
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.server import BackgroundServer

TOKEN = "fuzz-admin-token-0123456789"
SECRET = "whsec_fuzz_secret"

schema = schemathesis.openapi.from_dict(
    create_app(Settings(stripe_webhook_secret=SecretStr(SECRET)), start_refresher=False).openapi()
)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=30
)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
        migrate_with_catalogue(url)
        yield url
        return
    with temporary_postgres("basketball_fuzz") as url:
        yield url


@pytest.fixture(scope="module")
def api_url(database: str) -> Iterator[str]:
    url = database
    with BackgroundServer(create_sandbox(SandboxConfig())) as sandbox:
        config = Settings(
            database_url=url,
            stripe_api_base=sandbox.url,
            stripe_webhook_secret=SecretStr(SECRET),
            admin_token=SecretStr(TOKEN),
            stripe_max_network_retries=0,
            stripe_timeout_seconds=5,
            # The fuzzer is one client sending hundreds of requests: let them do real work.
            order_rate_limit="100000/minute",
            pay_link_rate_limit="100000/minute",
        )
        with BackgroundServer(create_app(config, start_refresher=False)) as api:
            # Some orders to find, cancel and reissue, so ids the fuzzer picks often exist.
            for i in range(5):
                body = {"product_id": 1 + i % 3, "parent_email": "f@example.org"}
                httpx.post(f"{api.url}/orders", json={**body, "player_name": "F"}, timeout=30)
            yield api.url


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_5xx_and_every_4xx_says_why(case: Any, api_url: str) -> None:
    response = case.call(base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"})
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    kind = response.headers.get("content-type") or [""]  # schemathesis: a list per header
    if 400 <= response.status_code < 500 and str(kind[0]).startswith("text/"):
        assert 'id="message"' in response.text, where  # a parent's page says why, in words
    elif 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict), where
        assert body.get("detail"), where

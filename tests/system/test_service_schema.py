"""Schemathesis over the service's OpenAPI schema, in process (ASGI): valid and invalid inputs.

Every answer must conform to the schema (status, content type, body), no input may
cause a server error, every invalid input is a 4xx and every 4xx carries a message.
``RECFUNNEL_SCHEMA_EXAMPLES`` sets the examples per operation (default 30: a few
hundred cases in the suite; the benchmark runs thousands).
"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

from recfunnel.config import config_from_dict
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.serving.app import create_app
from recfunnel.serving.settings import ServingSettings
from recfunnel.testing.synthetic import make_planted_data

EXAMPLES = int(os.environ.get("RECFUNNEL_SCHEMA_EXAMPLES", "30"))
RW = "schema-test-key-0123"
SEEN = {"cases": 0, "server_errors": 0, "by_status": {}}


def _build_app():
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="recfunnel-schema-"))
    data = make_planted_data(n_users_per_group=10, n_groups=3, items_per_group=15, seed=4)
    cfg = config_from_dict({
        "channels": [{"kind": "itemcf", "quota": 20}, {"kind": "popular", "quota": 20},
                     {"kind": "new_items", "quota": 10}],
        "reranker": {"kind": "mmr"}, "retrieval_k": 30, "history_length": 10,
    })
    fit_funnel(data, cfg, progress=False).save(root / "v1")
    os.environ["RECFUNNEL_SCHEMA_TEST_KEYS"] = f"read-write:{RW}"
    settings_ = ServingSettings(model_dir=root / "v1", events_url="memory://", api_keys_env="RECFUNNEL_SCHEMA_TEST_KEYS",
                                max_k=100, max_events=50, max_items=20, max_exclude=50, budget_ms=5000,
                                channel_timeout_ms=2000, stage_timeout_ms=2000)
    return create_app(settings_)


app = _build_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES)


def has_a_message(ctx, response, case):
    """A 4xx must say what was wrong."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"].strip(), \
            f"{response.status_code} without a message: {response.text[:200]}"
    return None


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_input_is_answered_without_server_error(case):
    response = case.call_and_validate(headers={"X-API-Key": RW}, additional_checks=[has_a_message])
    SEEN["cases"] += 1
    SEEN["by_status"][response.status_code] = SEEN["by_status"].get(response.status_code, 0) + 1
    assert response.status_code < 500, response.text


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print(f"\nschemathesis: {SEEN['cases']} cases, statuses {dict(sorted(SEEN['by_status'].items()))}")

"""Settings validation that protects a deployment from a Graph refusal at connect time."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.settings import Settings

BASE: dict[str, Any] = {
    "storage_table_endpoint": "https://stbookingsync.table.core.windows.net",
    "storage_queue_endpoint": "https://stbookingsync.queue.core.windows.net",
    "graph_tenant_id": "00000000-0000-0000-0000-0000000000aa",
}


@pytest.mark.parametrize("mode", ["managed_identity", "client_secret"])
def test_public_base_url_must_be_https_against_graph(mode: str) -> None:
    secret = {"graph_client_id": "app", "graph_client_secret": "s"}
    with pytest.raises(ValidationError, match="PUBLIC_BASE_URL must be an https URL"):
        Settings.model_validate(
            {**BASE, **secret, "graph_auth_mode": mode, "public_base_url": "http://x.example"}
        )
    https = Settings.model_validate(
        {**BASE, **secret, "graph_auth_mode": mode, "public_base_url": "https://x.example"}
    )
    assert https.public_base_url.scheme == "https"


def test_http_public_base_url_is_accepted_in_emulator_mode() -> None:
    local = Settings.model_validate(
        {**BASE, "graph_auth_mode": "emulator", "public_base_url": "http://127.0.0.1:7071"}
    )
    assert local.public_base_url.scheme == "http"

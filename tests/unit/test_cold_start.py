"""What `import function_app` (the host's indexing) loads: what the functions need, and
not what only some deployments use or what the app never calls.

The time itself is measured by `python -m bench.cold_start`; these tests keep the modules
that made it long from coming back unnoticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Module → why indexing must not import it.
NOT_IMPORTED_AT_INDEXING = {
    # Only GRAPH_AUTH_MODE=managed_identity/client_secret and identity-based Storage use a
    # credential, built by get_services(). In Azure the Python worker has imported
    # azure-identity before it indexes the app (the Azure Monitor exporter it starts
    # imports it), so nothing moves to the first request; locally it is never needed.
    "azure.identity": "loaded with the credential, not at indexing",
    "msal": "azure-identity's dependency",
    # msgraph-sdk's client imports each request builder when a call first walks through
    # it; the gateway imports the few it uses itself. The users collection (and the
    # User model behind it) is never walked at indexing.
    "msgraph.generated.users.users_request_builder": "imported only when walked",
    "msgraph.generated.models.user": "imported only when walked",
}
# msgraph-sdk has thousands of generated modules; the gateway's request builders and the
# models they and the gateway use are about 30.
MOST_GRAPH_MODULES_AT_INDEXING = 50

# Modules the functions do need at indexing: if these were missing, the check above would
# pass for an app that imports nothing at all.
IMPORTED_AT_INDEXING = (
    "azure.functions",
    "azure.data.tables.aio",
    "azure.storage.queue.aio",
    "msgraph.generated.users.item.user_item_request_builder",
    "msgraph.generated.users.item.events.item.event_item_request_builder",
    "kiota_http.httpx_request_adapter",
    "shared.composition",
)

PROBE = """
import sys
import function_app
print("\\n".join(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def loaded_at_indexing() -> set[str]:
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed snippet
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(done.stdout.split())


@pytest.mark.parametrize("module", sorted(NOT_IMPORTED_AT_INDEXING))
def test_indexing_does_not_import(loaded_at_indexing: set[str], module: str) -> None:
    assert module not in loaded_at_indexing, NOT_IMPORTED_AT_INDEXING[module]


@pytest.mark.parametrize("module", IMPORTED_AT_INDEXING)
def test_indexing_imports_what_the_functions_need(
    loaded_at_indexing: set[str], module: str
) -> None:
    assert module in loaded_at_indexing


def test_indexing_imports_only_the_graph_modules_the_gateway_uses(
    loaded_at_indexing: set[str],
) -> None:
    generated = {m for m in loaded_at_indexing if m.startswith("msgraph.generated.")}
    assert 0 < len(generated) <= MOST_GRAPH_MODULES_AT_INDEXING, sorted(generated)


GC_PROBE = """
import gc, sys
if sys.argv[1] == "off":
    gc.disable()
import function_app
print(gc.isenabled())
"""


@pytest.mark.parametrize(("before", "after"), [("on", "True"), ("off", "False")])
def test_indexing_leaves_the_garbage_collector_as_it_found_it(before: str, after: str) -> None:
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed snippet
        [sys.executable, "-c", GC_PROBE, before],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == after

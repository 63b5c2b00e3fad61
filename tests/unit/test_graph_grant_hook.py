"""The azd postprovision hook that grants Graph's Calendars.ReadWrite: a separate step after
the deployment, retried while a new identity replicates in Entra ID, and safe to run again.

It runs here against a stand-in `az` on PATH that answers like the real one would (its
calls are logged); no Azure is involved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "infra" / "hooks" / "grant-graph-app-role.sh"
PRINCIPAL = "11111111-2222-3333-4444-555555555555"

# A stand-in for the Azure CLI. GET of the assignments prints the assignment id once one
# was created; POST fails (as Entra ID does while the principal replicates) until the
# number of POSTs reaches $FAKE_AZ_POST_OK_AT.
FAKE_AZ = """#!/bin/sh
state="$FAKE_AZ_DIR"
echo "$*" >> "$state/calls"
case "$*" in
  "ad sp show"*) echo "graph-sp-object-id" ;;
  "rest --method POST"*)
    posts=$(($(cat "$state/posts" 2>/dev/null || echo 0) + 1)); echo $posts > "$state/posts"
    if [ "$posts" -lt "$FAKE_AZ_POST_OK_AT" ]; then
      echo "ERROR: Bad Request: Not a valid reference update." >&2
      exit 1
    fi
    touch "$state/granted" ;;
  "rest --uri"*) [ -e "$state/granted" ] && echo "assignment-id" ; true ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def fake_az(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(FAKE_AZ, encoding="utf-8")
    az.chmod(0o755)
    return tmp_path


def run_hook(state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    sh = shutil.which("sh")
    assert sh is not None
    return subprocess.run(  # noqa: S603 - our own script with a stand-in az
        [sh, str(HOOK)],
        env={
            "PATH": f"{state / 'bin'}:{os.environ['PATH']}",
            "FAKE_AZ_DIR": str(state),
            "GRANT_RETRY_DELAY_SECONDS": "0",
            "MANAGED_IDENTITY_PRINCIPAL_ID": PRINCIPAL,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def calls(state: Path) -> list[str]:
    log = state / "calls"
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def test_without_the_switch_it_does_nothing(fake_az: Path) -> None:
    result = run_hook(fake_az, FAKE_AZ_POST_OK_AT="1")

    assert result.returncode == 0
    assert calls(fake_az) == []


def test_a_grant_refused_while_the_identity_replicates_is_retried(fake_az: Path) -> None:
    result = run_hook(fake_az, GRANT_GRAPH_APP_ROLE="true", FAKE_AZ_POST_OK_AT="3")

    assert result.returncode == 0, result.stderr
    posts = [c for c in calls(fake_az) if c.startswith("rest --method POST")]
    assert len(posts) == 3
    assert f'"principalId":"{PRINCIPAL}"' in posts[-1]
    assert '"appRoleId":"ef54d2bf-783f-4e0f-bca1-3210c0444d99"' in posts[-1]
    assert "retrying" in result.stderr


def test_running_it_again_keeps_the_existing_grant(fake_az: Path) -> None:
    run_hook(fake_az, GRANT_GRAPH_APP_ROLE="true", FAKE_AZ_POST_OK_AT="1")
    again = run_hook(fake_az, GRANT_GRAPH_APP_ROLE="true", FAKE_AZ_POST_OK_AT="1")

    assert again.returncode == 0
    assert len([c for c in calls(fake_az) if c.startswith("rest --method POST")]) == 1
    assert "is granted" in again.stdout


def test_it_gives_up_after_the_last_attempt(fake_az: Path) -> None:
    result = run_hook(
        fake_az, GRANT_GRAPH_APP_ROLE="true", FAKE_AZ_POST_OK_AT="99", GRANT_ATTEMPTS="2"
    )

    assert result.returncode == 1
    assert "failed 2 times" in result.stderr


def test_the_grant_is_no_resource_of_the_deployment() -> None:
    for path in (REPO / "infra").rglob("*.bicep"):
        assert "Microsoft.Graph/" not in path.read_text(encoding="utf-8"), path
    assert "./infra/hooks/grant-graph-app-role.sh" in (REPO / "azure.yaml").read_text("utf-8")

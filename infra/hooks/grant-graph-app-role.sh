#!/bin/sh
# azd postprovision hook: grant the app's identity Microsoft Graph's application permission
# Calendars.ReadWrite (tenant-wide) when GRANT_GRAPH_APP_ROLE is true; otherwise nothing.
#
# A separate step after the deployment, not a resource in it: right after `azd up` creates
# the identity, Entra ID may not have replicated its service principal yet, and the grant
# fails with "Not a valid reference update" (microsoftgraph/msgraph-bicep-types#193). Here
# it is retried, and it is safe to run again: an existing grant is found and kept.
# Needs `az login` as a Privileged Role Administrator (docs/deploy-to-azure.md, option B).
set -eu

[ "${GRANT_GRAPH_APP_ROLE:-false}" = "true" ] || exit 0

principal="${MANAGED_IDENTITY_PRINCIPAL_ID:?MANAGED_IDENTITY_PRINCIPAL_ID is not set: run azd provision first}"
attempts="${GRANT_ATTEMPTS:-10}"
delay="${GRANT_RETRY_DELAY_SECONDS:-30}"
graph_app_id=00000003-0000-0000-c000-000000000000      # Microsoft Graph, in every tenant
role_id=ef54d2bf-783f-4e0f-bca1-3210c0444d99           # its app role Calendars.ReadWrite
assignments="https://graph.microsoft.com/v1.0/servicePrincipals/$principal/appRoleAssignments"

attempt=1
while :; do
    existing=$(az rest --uri "$assignments" \
        --query "value[?appRoleId=='$role_id'].id | [0]" -o tsv 2>/dev/null || true)
    if [ -n "$existing" ]; then
        echo "Calendars.ReadWrite is granted to $principal"
        exit 0
    fi
    if graph=$(az ad sp show --id "$graph_app_id" --query id -o tsv) &&
        az rest --method POST --uri "$assignments" --headers "Content-Type=application/json" \
            --body "{\"principalId\":\"$principal\",\"resourceId\":\"$graph\",\"appRoleId\":\"$role_id\"}" \
            >/dev/null; then
        echo "Calendars.ReadWrite granted to $principal"
        exit 0
    fi
    if [ "$attempt" -ge "$attempts" ]; then
        echo "Granting Calendars.ReadWrite failed $attempt times; run \`azd hooks run postprovision\` to try again" >&2
        exit 1
    fi
    echo "Grant failed (attempt $attempt of $attempts; a new identity can take minutes to replicate); retrying in ${delay} s" >&2
    attempt=$((attempt + 1))
    sleep "$delay"
done

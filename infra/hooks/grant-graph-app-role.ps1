# azd postprovision hook (Windows): the same as grant-graph-app-role.sh, which explains why
# the grant is a separate, retried step.
$ErrorActionPreference = 'Stop'
if ($env:GRANT_GRAPH_APP_ROLE -ne 'true') { exit 0 }

$principal = $env:MANAGED_IDENTITY_PRINCIPAL_ID
if (-not $principal) { throw 'MANAGED_IDENTITY_PRINCIPAL_ID is not set: run azd provision first' }
$attempts = if ($env:GRANT_ATTEMPTS) { [int]$env:GRANT_ATTEMPTS } else { 10 }
$delay = if ($env:GRANT_RETRY_DELAY_SECONDS) { [int]$env:GRANT_RETRY_DELAY_SECONDS } else { 30 }
$graphAppId = '00000003-0000-0000-c000-000000000000'  # Microsoft Graph, in every tenant
$roleId = 'ef54d2bf-783f-4e0f-bca1-3210c0444d99'      # its app role Calendars.ReadWrite
$assignments = "https://graph.microsoft.com/v1.0/servicePrincipals/$principal/appRoleAssignments"

for ($attempt = 1; ; $attempt++) {
    $existing = az rest --uri $assignments --query "value[?appRoleId=='$roleId'].id | [0]" -o tsv 2>$null
    if ($existing) { Write-Host "Calendars.ReadWrite is granted to $principal"; exit 0 }
    $graph = az ad sp show --id $graphAppId --query id -o tsv
    if ($LASTEXITCODE -eq 0) {
        $body = @{ principalId = $principal; resourceId = $graph; appRoleId = $roleId } | ConvertTo-Json -Compress
        az rest --method POST --uri $assignments --headers 'Content-Type=application/json' --body $body | Out-Null
        if ($LASTEXITCODE -eq 0) { Write-Host "Calendars.ReadWrite granted to $principal"; exit 0 }
    }
    if ($attempt -ge $attempts) {
        Write-Error "Granting Calendars.ReadWrite failed $attempt times; run 'azd hooks run postprovision' to try again"
        exit 1
    }
    Write-Warning "Grant failed (attempt $attempt of $attempts; a new identity can take minutes to replicate); retrying in $delay s"
    Start-Sleep -Seconds $delay
}

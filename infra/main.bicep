// Booking Sync for Microsoft 365: everything `azd up` provisions.
// Shape follows Azure-Samples/functions-quickstart-python-http-azd: a Flex Consumption (FC1)
// Function App running as one user-assigned identity, a storage account with shared keys off,
// Application Insights with local auth off, and role assignments collected in app/rbac.bicep.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; used to name the resource group and to derive a unique token for resource names.')
param environmentName string

@minLength(1)
@description('Region for all resources. It must offer Flex Consumption: az functionapp list-flexconsumption-locations.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'eastus2euap'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Microsoft Entra tenant of the Microsoft 365 mailboxes (GRAPH_TENANT_ID). Empty means this subscription\'s tenant, which is the only tenant a managed identity can get Graph tokens for.')
param graphTenantId string = ''

@minLength(36)
@description('Application (client) id of the API\'s app registration (API_APP_CLIENT_ID): App Service Authentication accepts tokens for it, and its app roles BookingSync.Frontend and BookingSync.Admin say who may call what. docs/deploy-to-azure.md creates it.')
param apiAppClientId string

@description('HTTPS base URL at which Microsoft Graph reaches the webhook routes (PUBLIC_BASE_URL). Empty means the Function App\'s default host name, https://<app>.azurewebsites.net.')
param publicBaseUrl string = ''

@description('Optional URL the app POSTs booking events to (BOOKING_EVENTS_WEBHOOK_URL). Empty disables the webhook; events still go to the booking-events queue.')
param bookingEventsWebhookUrl string = ''

@secure()
@description('Signing secret for the booking-events webhook (Standard Webhooks). Required when bookingEventsWebhookUrl is set; stored in a Key Vault that is created only then.')
param bookingEventsWebhookSecret string = ''

@minValue(0)
@description('Always-ready instances for the HTTP trigger group, so Graph validation (10 s) and notifications (3 s) are not answered from a cold start. 0 saves the baseline cost.')
param httpAlwaysReadyInstances int = 1

@minValue(1)
@maxValue(1000)
@description('Concurrent HTTP invocations per instance (triggers.http.perInstanceConcurrency). Every HTTP handler is async, so one instance serves many at once; Flex Consumption\'s default for Python is 1, which starts a new instance (a cold start) for every concurrent request beyond the first.')
param httpPerInstanceConcurrency int = 16

@maxValue(1000)
@minValue(40)
@description('Upper bound of Flex Consumption instances.')
param maximumInstanceCount int = 40

@description('NCRONTAB (6 fields) of the reconciliation timer (RECONCILE_SCHEDULE).')
param reconcileSchedule string = '0 */15 * * * *'

@description('NCRONTAB (6 fields) of the subscription-upkeep timer (SUBSCRIPTION_UPKEEP_SCHEDULE).')
param subscriptionUpkeepSchedule string = '0 5 * * * *'

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }

var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentStorageContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'
var keyVaultName = '${abbrs.keyVaultVaults}${resourceToken}'

var effectiveGraphTenantId = !empty(graphTenantId) ? graphTenantId : tenant().tenantId
// A Flex Consumption app created without a unique-hostname scope is served at <name>.azurewebsites.net
// (public cloud). The real host name is output as SERVICE_API_URI so a mismatch is visible.
var effectivePublicBaseUrl = !empty(publicBaseUrl) ? publicBaseUrl : 'https://${functionAppName}.azurewebsites.net'
var enableBookingEventsWebhook = !empty(bookingEventsWebhookUrl)

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The one identity of the app: storage (host and app), Application Insights ingestion,
// Key Vault references and Microsoft Graph all use it.
module apiUserAssignedIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'apiUserAssignedIdentity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module appServicePlan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'appserviceplan'
  scope: rg
  params: {
    name: '${abbrs.webServerFarms}${resourceToken}'
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true
    location: location
    tags: tags
  }
}

// Host storage (AzureWebJobsStorage), the deployment package container, and the app's own
// tables and queues. Only Microsoft Entra ID authentication: shared keys are off.
module storage 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    skuName: 'Standard_LRS'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [
        { name: deploymentStorageContainerName }
      ]
    }
    minimumTlsVersion: 'TLS1_2'
    location: location
    tags: tags
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.7.0' = {
  name: '${uniqueString(deployment().name, location)}-loganalytics'
  scope: rg
  params: {
    name: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

module monitoring 'br/public:avm/res/insights/component:0.4.1' = {
  name: '${uniqueString(deployment().name, location)}-appinsights'
  scope: rg
  params: {
    name: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    // Ingestion only with a Microsoft Entra token (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
    disableLocalAuth: true
  }
}

// The only secret the app may need. Key Vault exists only when the webhook is configured; the
// app setting is a Key Vault reference resolved by the platform with the app's identity.
module keyVault 'br/public:avm/res/key-vault/vault:0.12.1' = if (enableBookingEventsWebhook) {
  name: 'keyvault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    sku: 'standard'
    enableRbacAuthorization: true
    // Off so `azd down --purge` can remove the vault and a new environment can reuse the name.
    enablePurgeProtection: false
    softDeleteRetentionInDays: 7
    secrets: [
      {
        name: 'booking-events-webhook-secret'
        value: bookingEventsWebhookSecret
      }
    ]
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbacAssignments'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.name
    enableKeyVault: enableBookingEventsWebhook
    keyVaultName: keyVaultName
    managedIdentityPrincipalId: apiUserAssignedIdentity.outputs.principalId
  }
  // Dropped by Resource Manager when the vault is not deployed.
  dependsOn: [
    keyVault
  ]
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    location: location
    tags: tags
    appServicePlanId: appServicePlan.outputs.resourceId
    storageAccountName: storage.outputs.name
    deploymentStorageContainerName: deploymentStorageContainerName
    applicationInsightsName: monitoring.outputs.name
    identityId: apiUserAssignedIdentity.outputs.resourceId
    identityClientId: apiUserAssignedIdentity.outputs.clientId
    httpAlwaysReadyInstances: httpAlwaysReadyInstances
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    maximumInstanceCount: maximumInstanceCount
    graphTenantId: effectiveGraphTenantId
    publicBaseUrl: effectivePublicBaseUrl
    reconcileSchedule: reconcileSchedule
    subscriptionUpkeepSchedule: subscriptionUpkeepSchedule
    bookingEventsWebhookUrl: bookingEventsWebhookUrl
    keyVaultName: keyVaultName
    apiAppClientId: apiAppClientId
  }
  // The host starts with its roles in place (storage, ingestion, Key Vault references).
  dependsOn: [
    rbac
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.SERVICE_API_NAME
output SERVICE_API_NAME string = api.outputs.SERVICE_API_NAME
output SERVICE_API_URI string = api.outputs.SERVICE_API_URI
// Not named PUBLIC_BASE_URL / GRAPH_TENANT_ID: azd stores outputs in the environment, and those
// names are inputs (main.parameters.json), so a stale value would be fed back on the next run.
output APP_PUBLIC_BASE_URL string = effectivePublicBaseUrl
output APP_GRAPH_TENANT_ID string = effectiveGraphTenantId
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
// Needed for the Graph grant (infra/hooks, or by hand) and for Exchange RBAC for Applications
// (New-ServicePrincipal).
output MANAGED_IDENTITY_CLIENT_ID string = apiUserAssignedIdentity.outputs.clientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = apiUserAssignedIdentity.outputs.principalId
// What a booking frontend asks Microsoft Entra for (client credentials).
output API_TOKEN_SCOPE string = 'api://${apiAppClientId}/.default'

// The Function App on Flex Consumption, Python 3.11, running as the user-assigned identity.
// Every app setting it gets is in the delimited block below.

param name string
param location string = resourceGroup().location
param tags object = {}
@description('Name of the service in azure.yaml; azd finds the app by this tag.')
param serviceName string = 'api'
param appServicePlanId string
param storageAccountName string
param deploymentStorageContainerName string
param applicationInsightsName string
@description('Resource id of the user-assigned identity.')
param identityId string
@description('Client (application) id of the user-assigned identity.')
param identityClientId string
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 40
param httpAlwaysReadyInstances int = 1
@minValue(1)
@maxValue(1000)
@description('Concurrent HTTP invocations one instance takes before Flex Consumption adds another.')
param httpPerInstanceConcurrency int

param graphTenantId string
param publicBaseUrl string
param reconcileSchedule string
param subscriptionUpkeepSchedule string
@description('Empty disables the booking-events webhook settings.')
param bookingEventsWebhookUrl string = ''
@description('Key Vault holding the webhook signing secret; used only with a webhook URL.')
param keyVaultName string
@description('Application (client) id of the API\'s app registration, whose app roles say who may call what.')
param apiAppClientId string
@description('Tenant of that app registration.')
param apiAppTenantId string = tenant().tenantId

var bookingEventsWebhookSecretName = 'booking-events-webhook-secret'

// Warm instances for the HTTP trigger group (all HTTP functions), none when 0.
var httpAlwaysReady = httpAlwaysReadyInstances > 0 ? [
  {
    name: 'http'
    instanceCount: httpAlwaysReadyInstances
  }
] : []

resource stg 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// <app-settings>
// Every app setting of the Function App, one per line as `NAME: value`, nothing else between
// these markers. Names are shared.settings.Settings fields (upper-cased) or settings the
// Functions host reads; tests/unit/test_infra_settings.py parses these lines and fails when
// either side sets or reads a name the other does not know. No secret values: a secret is a
// Key Vault reference. Settings left out keep the defaults in shared/settings.py.
var appSettings = {
  // Functions host storage, identity-based (shared keys are off on the account).
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: stg.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: stg.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: stg.properties.primaryEndpoints.table
  // Telemetry: the host (host.json telemetryMode OpenTelemetry) and the Python worker export
  // to this resource with OpenTelemetry, Entra ID auth for ingestion (local auth is off).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The worker starts the Azure Monitor distro itself, runs each invocation inside the host's
  // trace (its traceparent), and tells the host not to export the worker's logs a second time.
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  // The app's own tables and queues: same account, reached with the identity below. The
  // endpoints come from the account itself, so they carry the cloud's own DNS suffix.
  STORAGE_TABLE_ENDPOINT: stg.properties.primaryEndpoints.table
  STORAGE_QUEUE_ENDPOINT: stg.properties.primaryEndpoints.queue
  AZURE_CLIENT_ID: identityClientId
  GRAPH_TENANT_ID: graphTenantId
  GRAPH_AUTH_MODE: 'managed_identity'
  PUBLIC_BASE_URL: publicBaseUrl
  // Timer triggers use schedule="%RECONCILE_SCHEDULE%" and "%SUBSCRIPTION_UPKEEP_SCHEDULE%".
  RECONCILE_SCHEDULE: reconcileSchedule
  SUBSCRIPTION_UPKEEP_SCHEDULE: subscriptionUpkeepSchedule
}

// Added only when a booking-events webhook URL is given (the app requires both together).
var bookingEventsWebhookSettings = {
  BOOKING_EVENTS_WEBHOOK_URL: bookingEventsWebhookUrl
  BOOKING_EVENTS_WEBHOOK_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${bookingEventsWebhookSecretName})'
}
// </app-settings>

module api 'br/public:avm/res/web/site:0.15.1' = {
  name: '${serviceName}-flex-consumption'
  params: {
    kind: 'functionapp,linux'
    name: name
    location: location
    tags: union(tags, { 'azd-service-name': serviceName })
    serverFarmResourceId: appServicePlanId
    httpsOnly: true
    clientAffinityEnabled: false
    managedIdentities: {
      systemAssigned: false
      userAssignedResourceIds: [
        identityId
      ]
    }
    // Key Vault references resolve with the user-assigned identity, not a system-assigned one.
    keyVaultAccessIdentityResourceId: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${stg.properties.primaryEndpoints.blob}${deploymentStorageContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: httpAlwaysReady
        // Every HTTP handler is async (I/O-bound on Storage and Graph), so one instance serves
        // many requests at once; Python's default of 1 would start an instance, with a cold
        // start, for each concurrent request beyond the first.
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      alwaysOn: false
      minTlsVersion: '1.2'
    }
    appSettingsKeyValuePairs: union(appSettings, empty(bookingEventsWebhookUrl) ? {} : bookingEventsWebhookSettings)
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: name
}

// App Service Authentication (Easy Auth) with Microsoft Entra ID in front of the app. It
// checks each caller's token (a frontend's client-credentials token, an administrator's
// sign-in) before a request reaches the Functions host, and hands the app the caller's
// claims, app roles included, in X-MS-CLIENT-PRINCIPAL; a client can never set that header
// itself. The app checks the role per route (functions/http.py).
// https://learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2
// https://learn.microsoft.com/azure/app-service/configure-authentication-provider-aad
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'authsettingsV2'
  dependsOn: [
    api
  ]
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      // An API answers 401, not a redirect to a sign-in page; the console's page links to
      // /.auth/login/aad itself.
      unauthenticatedClientAction: 'Return401'
      // Graph calls the webhooks without a token (they check clientState and the tenant);
      // uptime probes call the terse health; the OpenAPI document is public.
      excludedPaths: [
        '/api/graph/notifications'
        '/api/graph/lifecycle'
        '/api/health'
        '/api/openapi.json'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: apiAppClientId
          // v2.0 issuer: the registration asks for v2 access tokens
          // (requestedAccessTokenVersion 2, docs/deploy-to-azure.md).
          openIdIssuer: '${environment().authentication.loginEndpoint}${apiAppTenantId}/v2.0'
        }
        validation: {
          // v2 tokens carry the client id as audience; the api:// URI for v1 ones.
          allowedAudiences: [
            apiAppClientId
            'api://${apiAppClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = 'https://${api.outputs.defaultHostname}'

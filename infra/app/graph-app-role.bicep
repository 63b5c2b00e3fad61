// Grants the app's identity the Microsoft Graph application permission Calendars.ReadWrite.
// An app role assignment to a service principal is what admin consent to an application
// permission records, so this is the admin consent. It is tenant-wide: the identity can then
// read and write every calendar in the tenant. To limit it to some mailboxes, do not deploy this
// module and grant "Application Calendars.ReadWrite" with Exchange RBAC for Applications instead
// (docs/deploy-to-azure.md).
//
// The deploying user needs the Entra role Privileged Role Administrator (Graph permissions
// AppRoleAssignment.ReadWrite.All and Application.Read.All); otherwise the deployment fails here.
extension microsoftGraphV1

@description('Object (principal) id of the user-assigned identity that receives the app role.')
param principalId string

// Microsoft Graph's application id, the same in every tenant.
var microsoftGraphAppId = '00000003-0000-0000-c000-000000000000'
// Id of Microsoft Graph's application permission (app role) Calendars.ReadWrite.
var calendarsReadWriteAppRoleId = 'ef54d2bf-783f-4e0f-bca1-3210c0444d99'

resource microsoftGraph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: microsoftGraphAppId
}

resource calendarsReadWrite 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  appRoleId: calendarsReadWriteAppRoleId
  principalId: principalId
  resourceId: microsoftGraph.id
}

output appRoleAssignmentId string = calendarsReadWrite.id

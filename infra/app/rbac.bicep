// What the app's identity may do, and why. Built-in role definition IDs are fixed across clouds.
param principalId string
param hostAccountName string
param backupAccountName string
param serviceBusNamespaceName string
param appInsightsName string

var roles = {
  // Host storage: timer status and blob receipts (blobs), blob-trigger bookkeeping (queues).
  // Backup storage: status/log blobs, containers, disk snapshots, and the user delegation key
  // every SAS is signed with; the blob trigger's poison queue.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // Backup storage: jobs, policies, protected items, the VM inventory.
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // The worker receives tasks; the scheduler, backup-now and the status trigger (retries) send them.
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  // Telemetry with Entra authentication.
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource hostAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostAccountName
}

resource backupAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: backupAccountName
}

resource namespace 'Microsoft.ServiceBus/namespaces@2021-11-01' existing = {
  name: serviceBusNamespaceName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource hostRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
]: {
  name: guid(hostAccount.id, principalId, role)
  scope: hostAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource backupRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]: {
  name: guid(backupAccount.id, principalId, role)
  scope: backupAccount
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource busRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [
  roles.serviceBusDataReceiver
  roles.serviceBusDataSender
]: {
  name: guid(namespace.id, principalId, role)
  scope: namespace
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource telemetryRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// vmsnap in Azure: the Function App, its storage, the snapshot-tasks queue, monitoring, and one
// user-assigned identity holding every permission the app needs (no keys in app settings but the
// content share's, which Elastic Premium still requires).
//
//   az deployment group create -g <rg> -f infra/main.bicep -p baseName=vmsnap protectedVmResourceGroups='["vms-rg"]'
//   (the status blob trigger on Event Grid: add -p statusBlobSource=EventGrid, publish the app, then
//   deploy again with -p statusBlobSource=EventGrid statusEventSubscription=true; docs/ingestion.md)
//   azd up                                   (azure.yaml; infra/main.parameters.json)
targetScope = 'resourceGroup'

@description('Client id of an Entra ID app registration: when set, App Service authentication (Entra ID) stands in front of the dashboard and its API (infra/app/dashboard-auth.bicep). Empty: function keys only.')
param dashboardAuthClientId string = ''

@description('The Entra ID tenant dashboard users sign in from (with dashboardAuthClientId).')
param dashboardAuthTenantId string = tenant().tenantId

@description('Short name all resource names start with (letters and digits; hyphens are dropped where names forbid them).')
@minLength(3)
@maxLength(12)
param baseName string = 'vmsnap'

@description('Region of every resource.')
param location string = resourceGroup().location

@description('Resource groups holding the protected VMs: the app gets Virtual Machine Contributor there to set the VMSnapshot extension, and a restore point role for managed-disk VMs.')
param protectedVmResourceGroups array = []

@description('The same, as one comma-separated string (azd passes AZURE_PROTECTED_VM_RESOURCE_GROUPS here); both lists are granted.')
param protectedVmResourceGroupList string = ''

@description('Comma-separated e-mail addresses the action group notifies of failed backups, app failures and dead-lettered tasks.')
param alertEmails string = ''

@secure()
@description('A webhook (Logic App, Teams, PagerDuty ...) for the action group and for the app\'s own per-item alerts, both in the common alert schema; empty for none.')
param alertWebhookUrl string = ''

@description('NCRONTAB of the alert evaluator.')
param alertSchedule string = '*/30 * * * * *'

@description('NCRONTAB (six fields, seconds first) of the scheduling timer.')
param snapshotSchedule string = '0 */5 * * * *'

@description('NCRONTAB of the stale-job sweep.')
param sweepSchedule string = '0 */10 * * * *'

@description('NCRONTAB of the timer that follows restore points (managed-disk VMs) to their jobs\' end.')
param restorePointSchedule string = '0 */1 * * * *'

@description('How far back a tick catches up slots missed while the app was down, in hours.')
param scheduleCatchUpHours int = 24

@description('How the status blob trigger finds new reports: LogsAndContainerScan polls the container (every scan reads all of it); EventGrid waits for the storage account\'s BlobCreated events (docs/ingestion.md).')
@allowed(['LogsAndContainerScan', 'EventGrid'])
param statusBlobSource string = 'LogsAndContainerScan'

@description('Subscribe the status blob trigger to the backup account\'s events. Set true in a second deployment, after the app has started with statusBlobSource EventGrid: the endpoint\'s key exists only then.')
param statusEventSubscription bool = false

@description('Elastic Premium plan size. The status blob trigger polls its container by default, which Flex Consumption does not offer.')
@allowed(['EP1', 'EP2', 'EP3'])
param planSku string = 'EP1'

@description('Tags on every resource.')
param tags object = {}

var token = toLower(uniqueString(subscription().id, resourceGroup().id, baseName))
// Storage account names allow lower-case letters and digits only.
var compactName = toLower(replace(baseName, '-', ''))
var tasksQueue = 'snapshot-tasks'
var plannerQueue = 'plan-shards'
var retentionQueue = 'retention-parts'
var restoreQueue = 'restore-tasks'
var digestQueue = 'digest-tasks'
var statusContainer = 'vmsnap-status'
var vmResourceGroups = union(protectedVmResourceGroups, empty(protectedVmResourceGroupList) ? [] : split(replace(protectedVmResourceGroupList, ' ', ''), ','))
var emails = empty(alertEmails) ? [] : split(replace(alertEmails, ' ', ''), ',')

module identity 'app/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-${baseName}-${token}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  params: {
    hostAccountName: take('st${compactName}h${token}', 24)
    backupAccountName: take('st${compactName}b${token}', 24)
    statusContainer: statusContainer
    location: location
    tags: tags
  }
}

module serviceBus 'app/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    namespaceName: 'sb-${baseName}-${token}'
    queueName: tasksQueue
    plannerQueueName: plannerQueue
    retentionQueueName: retentionQueue
    restoreQueueName: restoreQueue
    digestQueueName: digestQueue
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: 'log-${baseName}-${token}'
    appInsightsName: 'appi-${baseName}-${token}'
    location: location
    tags: tags
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  params: {
    principalId: identity.outputs.principalId
    hostAccountName: storage.outputs.hostAccountName
    backupAccountName: storage.outputs.backupAccountName
    serviceBusNamespaceName: serviceBus.outputs.namespaceName
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  params: {
    actionGroupName: 'ag-${baseName}-${token}'
    appInsightsName: monitoring.outputs.appInsightsName
    serviceBusNamespaceName: serviceBus.outputs.namespaceName
    tasksQueue: tasksQueue
    location: location
    tags: tags
    emails: emails
    webhookUrl: alertWebhookUrl
  }
}

module vmAccess 'app/vm-access.bicep' = [for vmResourceGroup in vmResourceGroups: {
  name: 'vm-access-${vmResourceGroup}'
  scope: resourceGroup(vmResourceGroup)
  params: {
    principalId: identity.outputs.principalId
  }
}]

module functionApp 'app/function.bicep' = {
  name: 'function'
  params: {
    planName: 'plan-${baseName}-${token}'
    appName: 'func-${baseName}-${token}'
    planSku: planSku
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    hostAccountName: storage.outputs.hostAccountName
    backupBlobEndpoint: storage.outputs.backupBlobEndpoint
    backupQueueEndpoint: storage.outputs.backupQueueEndpoint
    backupTableEndpoint: storage.outputs.backupTableEndpoint
    serviceBusHost: serviceBus.outputs.host
    tasksQueue: tasksQueue
    plannerQueue: plannerQueue
    retentionQueue: retentionQueue
    restoreQueue: restoreQueue
    digestQueue: digestQueue
    statusContainer: statusContainer
    snapshotSchedule: snapshotSchedule
    sweepSchedule: sweepSchedule
    restorePointSchedule: restorePointSchedule
    scheduleCatchUpHours: scheduleCatchUpHours
    statusBlobSource: statusBlobSource
    appInsightsConnectionString: monitoring.outputs.connectionString
    alertSchedule: alertSchedule
    alertWebhookUrl: alertWebhookUrl
  }
  // The host starts as soon as the site exists: let it find its permissions in place.
  dependsOn: [rbac]
}

module dashboardAuth 'app/dashboard-auth.bicep' = if (!empty(dashboardAuthClientId)) {
  name: 'dashboard-auth'
  params: {
    appName: functionApp.outputs.appName
    clientId: dashboardAuthClientId
    tenantId: dashboardAuthTenantId
  }
}

module statusEvents 'app/status-events.bicep' = if (statusBlobSource == 'EventGrid' && statusEventSubscription) {
  name: 'status-events'
  params: {
    appName: functionApp.outputs.appName
    backupAccountName: storage.outputs.backupAccountName
    statusContainer: statusContainer
    functionName: 'ingest_status'
    location: location
    tags: tags
  }
}

output functionAppName string = functionApp.outputs.appName
output backupStorageAccount string = storage.outputs.backupAccountName
output serviceBusNamespace string = serviceBus.outputs.namespaceName
output identityClientId string = identity.outputs.clientId

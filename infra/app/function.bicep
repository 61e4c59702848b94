// The Function App on Linux Elastic Premium, Python 3.11, running as the user-assigned identity.
// Every setting the code and its bindings read is set here (tests/infra pins that).
param planName string
param appName string
param planSku string
param location string
param tags object
param identityId string
param identityClientId string
param hostAccountName string
param backupBlobEndpoint string
param backupQueueEndpoint string
param backupTableEndpoint string
param serviceBusHost string
param tasksQueue string
param plannerQueue string
param retentionQueue string
param restoreQueue string
param digestQueue string
@description('NCRONTAB of the restore drills timer (due drills, and cleanup after their keep windows).')
param restoreTestSchedule string = '0 */15 * * * *'
@description('Fleet size from which a tick fans out to the planner queue, and retention to the retention queue.')
param plannerFanOutItems int = 5000
param statusContainer string
param snapshotSchedule string
param sweepSchedule string
param restorePointSchedule string
param scheduleCatchUpHours int
@description('LogsAndContainerScan (the host polls the status container) or EventGrid (it waits for events).')
param statusBlobSource string = 'LogsAndContainerScan'
@description('NCRONTAB of the retention run (expired recovery points, failed attempts, old status blobs).')
param retentionSchedule string = '0 0 3 * * *'
@description('Days a final job keeps its status and log blobs in the status container.')
param statusBlobRetentionDays int = 7
@description('Snapshots per disk blob at which a backup is refused (code 85) until retention runs.')
param snapshotLimit int = 450
param appInsightsConnectionString string
@description('NCRONTAB of the alert evaluator.')
param alertSchedule string = '*/30 * * * * *'
@secure()
@description('Where the app sends its per-item alerts (common alert schema); empty: recorded only.')
param alertWebhookUrl string = ''
@description('Level of the Azure SDKs\' loggers; INFO shows every request (and is billed by the gigabyte).')
param sdkLogLevel string = 'WARNING'

resource hostAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostAccountName
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'elastic'
  sku: {
    name: planSku
    tier: 'ElasticPremium'
  }
  properties: {
    reserved: true
    maximumElasticWorkerCount: 20
  }
}

resource app 'Microsoft.Web/sites@2023-12-01' = {
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'vmsnap' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      linuxFxVersion: 'Python|3.11'
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
      appSettings: [
        { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
        { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'python' }
        // One Python worker process per core of the plan (EP1 1, EP2 2, EP3 4): a process runs one
        // interpreter, and status ingestion is CPU-bound in it (docs/ingestion.md, docs/benchmarks.md).
        { name: 'FUNCTIONS_WORKER_PROCESS_COUNT', value: planSku == 'EP3' ? '4' : planSku == 'EP2' ? '2' : '1' }
        // The host's own storage, reached with the identity.
        { name: 'AzureWebJobsStorage__accountName', value: hostAccount.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
        // Elastic Premium mounts the app's content from this share; it takes only a key.
        {
          name: 'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING'
          value: 'DefaultEndpointsProtocol=https;AccountName=${hostAccount.name};AccountKey=${hostAccount.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
        }
        { name: 'WEBSITE_CONTENTSHARE', value: toLower(appName) }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: appInsightsConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identityClientId};Authorization=AAD' }
        // The backup storage account: the blob trigger needs the queue endpoint for its poison queue.
        { name: 'BackupStorage__blobServiceUri', value: backupBlobEndpoint }
        { name: 'BackupStorage__queueServiceUri', value: backupQueueEndpoint }
        { name: 'BackupStorage__tableServiceUri', value: backupTableEndpoint }
        { name: 'BackupStorage__credential', value: 'managedidentity' }
        { name: 'BackupStorage__clientId', value: identityClientId }
        { name: 'ServiceBusConnection__fullyQualifiedNamespace', value: serviceBusHost }
        { name: 'ServiceBusConnection__credential', value: 'managedidentity' }
        { name: 'ServiceBusConnection__clientId', value: identityClientId }
        { name: 'SNAPSHOT_TASKS_QUEUE', value: tasksQueue }
        { name: 'PLANNER_QUEUE', value: plannerQueue }
        { name: 'RETENTION_QUEUE', value: retentionQueue }
        { name: 'RESTORE_TASKS_QUEUE', value: restoreQueue }
        { name: 'DIGEST_TASKS_QUEUE', value: digestQueue }
        { name: 'DIGEST_AFTER_BACKUP', value: 'true' }
        { name: 'RESTORE_TEST_SCHEDULE', value: restoreTestSchedule }
        { name: 'PLANNER_FAN_OUT_ITEMS', value: string(plannerFanOutItems) }
        { name: 'SNAPSHOT_SCHEDULE', value: snapshotSchedule }
        { name: 'SWEEP_SCHEDULE', value: sweepSchedule }
        { name: 'RESTORE_POINT_SCHEDULE', value: restorePointSchedule }
        { name: 'STATUS_CONTAINER', value: statusContainer }
        { name: 'STATUS_BLOB_SOURCE', value: statusBlobSource }
        { name: 'TABLE_PREFIX', value: 'vmsnap' }
        { name: 'DISPATCHER', value: 'arm' }
        { name: 'AZURE_SUBSCRIPTION_ID', value: subscription().subscriptionId }
        { name: 'SCHEDULE_CATCH_UP_HOURS', value: string(scheduleCatchUpHours) }
        { name: 'RETENTION_SCHEDULE', value: retentionSchedule }
        { name: 'STATUS_BLOB_RETENTION_DAYS', value: string(statusBlobRetentionDays) }
        { name: 'SNAPSHOT_LIMIT', value: string(snapshotLimit) }
        { name: 'ALERT_SCHEDULE', value: alertSchedule }
        { name: 'ALERT_WEBHOOK_URL', value: alertWebhookUrl }
        { name: 'SDK_LOG_LEVEL', value: sdkLogLevel }
        { name: 'DASHBOARD_KEEP_WARM', value: 'true' }
      ]
    }
  }
}

output appName string = app.name

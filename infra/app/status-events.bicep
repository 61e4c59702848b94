// Event Grid delivers each write of a status blob (BlobCreated: a block blob put, new or replaced) to
// the status blob trigger, so the Functions host finds new reports without scanning the container.
// The endpoint is the blob extension's webhook with the host's blobs_extension system key, as in
// Microsoft's tutorial "Trigger Azure Functions on blob containers using an event subscription".
// Deploy it once the app runs with STATUS_BLOB_SOURCE=EventGrid (main.bicep, statusEventSubscription):
// that key exists only after the host has started such a trigger, and Event Grid validates the
// endpoint when the subscription is created.
param appName string
param backupAccountName string
param statusContainer string
param functionName string
param location string
param tags object

resource app 'Microsoft.Web/sites@2023-12-01' existing = {
  name: appName
}

resource backupAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: backupAccountName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${backupAccountName}-events'
  // A storage account's system topic lives in the account's region.
  location: location
  tags: tags
  properties: {
    source: backupAccount.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource statusBlobs 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'status-blobs'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${app.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${listKeys('${app.id}/host/default', '2023-12-01').systemKeys.blobs_extension}'
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    // Only what the trigger's path matches: <container>/<job>/<attempt>.Status.txt, not the logs.
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      subjectBeginsWith: '/blobServices/default/containers/${statusContainer}/'
      subjectEndsWith: '.Status.txt'
    }
    // While the app is down Event Grid keeps retrying for a day; a report it drops is still read by
    // the stale-job sweep, which reads the status blob of every job in progress.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output subscriptionName string = statusBlobs.name

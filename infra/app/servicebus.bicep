// The snapshot-tasks queue. Standard tier: duplicate detection is what makes a re-sent task
// (same MessageId = <job id>_<attempt>) harmless.
param namespaceName string
param queueName string
param location string
param tags object

resource namespace 'Microsoft.ServiceBus/namespaces@2021-11-01' = {
  name: namespaceName
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = {
  parent: namespace
  name: queueName
  properties: {
    requiresDuplicateDetection: true
    // Longer than the extension's 140-minute command window, so any re-send of a live task is dropped.
    duplicateDetectionHistoryTimeWindow: 'PT3H'
    // host.json renews the lock for up to 5 minutes; dispatch returns in seconds.
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P1D'
  }
}

output namespaceName string = namespace.name
output host string = '${namespace.name}.servicebus.windows.net'

// The snapshot-tasks queue. Standard tier: duplicate detection is what makes a re-sent task
// (same MessageId = <job id>_<attempt>) harmless.
param namespaceName string
param queueName string
param plannerQueueName string
param retentionQueueName string
param restoreQueueName string
param digestQueueName string
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

// Shard requests of a tick that fans out (one per shard and tick, MessageId plan-<shard>-<tick>): a
// planner that fails hands its message back and the shard is planned again, resuming where it stopped.
resource plannerQueue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = {
  parent: namespace
  name: plannerQueueName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT1H'
    // A shard of 10,000 items plans in well under a minute; host.json renews the lock up to 5 minutes.
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    // A request older than the next ticks is worthless: they plan the same slots.
    defaultMessageTimeToLive: 'PT30M'
  }
}

// Retention's part requests (a shard, or the status blobs; MessageId retain-<part>-<run>-<pages>): a worker
// settles its part from the part's cursor and, after 2 minutes, sends itself the next request, so no
// delivery outlives its lock renewal; one that fails is delivered again and resumes from the cursor.
resource retentionQueue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = {
  parent: namespace
  name: retentionQueueName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT1H'
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    // The next day's run starts every part again: an older request is worthless.
    defaultMessageTimeToLive: 'PT23H'
  }
}

// Restore tasks (MessageId <job>_restore_<step>): a worker resumes from the job's per-disk state, and a long
// restore sends itself a continuation (the next step) every few minutes, so no delivery outlives its lock.
resource restoreQueue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = {
  parent: namespace
  name: restoreQueueName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT1H'
    lockDuration: 'PT5M'
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P1D'
  }
}

// Digest requests (MessageId digest-<vm>-<point>), one per new recovery point of blob snapshots: a worker reads
// the point's snapshots once and records their digests, so every restore of the point reads its copy only.
// A digest already recorded is read, not redone; a lost request only costs the first restore one more read.
resource digestQueue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = {
  parent: namespace
  name: digestQueueName
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT1H'
    lockDuration: 'PT5M'
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P1D'
  }
}

output namespaceName string = namespace.name
output host string = '${namespace.name}.servicebus.windows.net'

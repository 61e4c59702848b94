// Two accounts: the Functions host's own (timer status, blob receipts, content share) and the
// backup account (tables, status and log blobs, and the page-blob disks of the protected VMs,
// which must live here: the app mints its SAS for them with this account's delegation key).
param hostAccountName string
param backupAccountName string
param statusContainer string
param location string
param tags object

var common = {
  minimumTlsVersion: 'TLS1_2'
  supportsHttpsTrafficOnly: true
  allowBlobPublicAccess: false
}

resource hostAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: hostAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  // Elastic Premium mounts its content share with a key; everything else uses the identity.
  properties: union(common, { allowSharedKeyAccess: true })
}

resource backupAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: backupAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_ZRS' }
  // No keys: the app signs user-delegation SAS, which stay valid with shared keys off.
  properties: union(common, { allowSharedKeyAccess: false })
}

resource backupBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: backupAccount
  name: 'default'
}

resource status 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: backupBlobs
  name: statusContainer
}

resource rejected 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: backupBlobs
  name: '${statusContainer}-rejected'
}

output hostAccountName string = hostAccount.name
output backupAccountName string = backupAccount.name
output backupBlobEndpoint string = backupAccount.properties.primaryEndpoints.blob
output backupQueueEndpoint string = backupAccount.properties.primaryEndpoints.queue
output backupTableEndpoint string = backupAccount.properties.primaryEndpoints.table

// Deployed once per resource group of protected VMs: the app reads the VMs (inventory, disks) and
// writes their VMSnapshotLinux extension (the arm dispatcher, VMs on unmanaged disks), and backs up
// managed-disk VMs through VM restore points.
param principalId string

// Virtual Machine Contributor
var virtualMachineContributor = '9980e02c-c2be-4d73-94e8-173b1dc7cf3c'

resource vmContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, virtualMachineContributor)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', virtualMachineContributor)
  }
}

// Restore points (managed-disk VMs). No built-in role is known to grant restore point collections
// without far more (Contributor), so this custom role lists exactly the calls of
// shared/adapters/restore_points.py (ARM_ACTIONS there; a test keeps the two equal): the VM and its
// disks read, the VM's collection and its restore points created, read and deleted (retention),
// disks created from disk restore points (restore), an OriginalLocation restore's safety snapshots and
// its swap of the VM's disks (the VM written), and the long-running operations polled (VM and restore
// point operations, disk and snapshot operations).
resource restorePointRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'vmsnap-restore-points')
  properties: {
    roleName: 'vmsnap restore points ${uniqueString(resourceGroup().id)}'
    description: 'What vmsnap needs to back up managed-disk VMs of this resource group through VM restore points.'
    type: 'CustomRole'
    assignableScopes: [resourceGroup().id]
    permissions: [
      {
        actions: [
          'Microsoft.Compute/virtualMachines/read'
          'Microsoft.Compute/virtualMachines/write'
          'Microsoft.Compute/disks/read'
          'Microsoft.Compute/disks/write'
          'Microsoft.Compute/disks/delete'
          'Microsoft.Compute/disks/beginGetAccess/action'
          'Microsoft.Compute/disks/endGetAccess/action'
          'Microsoft.Compute/snapshots/read'
          'Microsoft.Compute/snapshots/write'
          'Microsoft.Compute/snapshots/delete'
          'Microsoft.Compute/restorePointCollections/read'
          'Microsoft.Compute/restorePointCollections/write'
          'Microsoft.Compute/restorePointCollections/restorePoints/read'
          'Microsoft.Compute/restorePointCollections/restorePoints/write'
          'Microsoft.Compute/restorePointCollections/restorePoints/delete'
          'Microsoft.Compute/restorePointCollections/restorePoints/diskRestorePoints/read'
          'Microsoft.Compute/locations/operations/read'
          'Microsoft.Compute/locations/diskOperations/read'
        ]
        notActions: []
      }
    ]
  }
}

resource restorePoints 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, restorePointRole.id)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: restorePointRole.id
  }
}

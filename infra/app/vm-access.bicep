// Deployed once per resource group of protected VMs: the app reads the VMs (inventory, disks) and
// writes their VMSnapshotLinux extension (the arm dispatcher).
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

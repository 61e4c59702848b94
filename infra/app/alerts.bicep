// Azure Monitor alerts on the app itself, sent through one action group (e-mail and/or a webhook, in the
// common alert schema: the same shape the app's own per-item alerts have, docs/monitoring.md).
// - failed backups: the app's vmsnap.jobs metric with outcome Failed (OpenTelemetry, Application Insights);
// - the app failing: function invocations that failed (requests with success == false);
// - dead-lettered tasks: the snapshot-tasks queue's dead-letter count.
param actionGroupName string
param appInsightsName string
param serviceBusNamespaceName string
param tasksQueue string
param location string
param tags object
@description('E-mail addresses the action group notifies.')
param emails array = []
@secure()
@description('A webhook the action group calls (common alert schema); empty for none.')
param webhookUrl string = ''

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource namespace 'Microsoft.ServiceBus/namespaces@2021-11-01' existing = {
  name: serviceBusNamespaceName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: take('vmsnap', 12)
    enabled: true
    emailReceivers: [for (address, index) in emails: {
      name: 'email-${index}'
      emailAddress: address
      useCommonAlertSchema: true
    }]
    webhookReceivers: empty(webhookUrl) ? [] : [
      {
        name: 'webhook'
        serviceUri: webhookUrl
        useCommonAlertSchema: true
      }
    ]
  }
}

// Log search alerts evaluate every 5 minutes over the last 5 (Application Insights ingests within minutes).
resource failedBackups 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'vmsnap-failed-backups'
  location: location
  tags: tags
  properties: {
    displayName: 'vmsnap: backups failed'
    description: 'Backup jobs ended Failed (metric vmsnap.jobs, outcome Failed). See vmsnap alert list for which VMs and why.'
    severity: 1
    enabled: true
    scopes: [appInsights.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "vmsnap.jobs" and tostring(customDimensions.operation) == "Backup" and tostring(customDimensions.outcome) == "Failed" | summarize failed = sum(valueSum)'
          metricMeasureColumn: 'failed'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: { actionGroups: [actionGroup.id] }
  }
}

resource appFailures 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'vmsnap-app-failures'
  location: location
  tags: tags
  properties: {
    displayName: 'vmsnap: the app is failing'
    description: 'Function invocations failed (an exception reached the host): the scheduler, worker, ingestion or a timer.'
    severity: 1
    enabled: true
    scopes: [appInsights.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: 'requests | where success == false | summarize failures = count()'
          metricMeasureColumn: 'failures'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: { actionGroups: [actionGroup.id] }
  }
}

resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'vmsnap-dead-lettered-tasks'
  location: 'global'
  tags: tags
  properties: {
    description: 'Snapshot tasks reached the dead-letter queue (10 failed deliveries): their backups never ran.'
    severity: 1
    enabled: true
    scopes: [namespace.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'deadlettered'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            { name: 'EntityName', operator: 'Include', values: [tasksQueue] }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
        }
      ]
    }
    autoMitigate: true
    actions: [{ actionGroupId: actionGroup.id }]
  }
}

output actionGroupId string = actionGroup.id

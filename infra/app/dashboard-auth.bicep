// App Service authentication (Entra ID) in front of the Function App: a browser is sent to sign in before any
// page or API call reaches a function, which still asks for its function key (auth level FUNCTION).
// Deployed only when main's dashboardAuthClientId names an app registration (docs/dashboard.md, "Access").

@description('The Function App to put sign-in in front of.')
param appName string

@description('Client (application) id of the Entra ID app registration users sign in to; its redirect URI is https://<app>.azurewebsites.net/.auth/login/aad/callback, with ID tokens issued.')
param clientId string

@description('The Entra ID tenant users sign in from.')
param tenantId string

resource app 'Microsoft.Web/sites@2023-12-01' existing = {
  name: appName
}

resource auth 'Microsoft.Web/sites/config@2023-12-01' = {
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      // Event Grid delivers status blob events to the blob extension's webhook with its system key; it
      // cannot sign in, and must not be sent to a login page.
      excludedPaths: [
        '/runtime/webhooks/blobs'
      ]
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: clientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            clientId
            'api://${clientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: true
      }
    }
  }
}

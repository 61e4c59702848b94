"""Adapters: the only code that talks to Azure SDKs. They translate SDK errors into shared.errors."""

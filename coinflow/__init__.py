"""Shared pieces of the three pipelines: settings, domain records, local services, the feature store."""

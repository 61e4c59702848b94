"""Use cases: each takes its dependencies (a Services bundle or explicit ports) and returns an outcome."""

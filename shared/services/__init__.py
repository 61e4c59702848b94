"""Use cases: each takes the narrow Protocol of what it reads (shared/services/needs.py) and returns an outcome."""

"""The Feast feature repository: definitions only (see definitions.py)."""

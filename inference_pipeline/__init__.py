"""The inference pipeline (see the project issues)."""

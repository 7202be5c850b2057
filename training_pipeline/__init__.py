"""The training pipeline (see the project issues)."""

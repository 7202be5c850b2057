"""Deep models of the training pipeline (PyTorch): sequence regressors, their training loop and checkpoints."""

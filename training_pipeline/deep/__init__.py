"""The torch infrastructure the deep models share: configuration, training loop, checkpoints, batches, networks."""

"""The pure core of trading, shared by the pipelines: orders and their state machine, fees, the ledger and its
positions and PnL, and the fill model over top-of-book steps. No I/O: the inference pipeline's execution service
persists and routes what these compute, and the training pipeline's simulator runs on them."""

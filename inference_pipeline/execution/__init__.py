"""Acting on predictions: orders, fills, positions and PnL, risk limits, venues and strategies.

The pure parts (here the paper venue's fill model, the risk checks and the
strategies; the order state machine, fees and accounting in the shared
`coinflow.trading`) are small functions and classes without I/O; the service
around them keeps the append-only trading database and talks to a venue.
"""

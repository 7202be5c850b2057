"""Acting on predictions: orders, fills, positions and PnL, risk limits, venues and strategies.

The pure parts (the order state machine, the paper venue's fill model, the
accounting, the risk checks, the strategies) are small functions and classes
without I/O; the service around them keeps the append-only trading database
and talks to a venue.
"""

"""The order-book pipeline: L2 books -> verified book states -> 4-second book features -> Feast."""

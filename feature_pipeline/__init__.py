"""The streaming feature pipeline: exchange trades -> Kafka -> candles + indicators -> Feast."""

"""The normaliser: raw source events in, canonical SS 12000 state and per-vendor change events out."""

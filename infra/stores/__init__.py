"""Adapters to the state stores: one Protocol per concern, one module per backend."""

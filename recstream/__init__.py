"""recstream: a streaming, event-driven, real-time recommender."""

__version__ = "0.1.0"

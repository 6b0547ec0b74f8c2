"""Local infrastructure: a real Kafka broker and a real Redis server, tracked by pid file."""

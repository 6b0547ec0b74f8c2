"""Message contracts: a JSON Schema file per message (for producers in any language) and fast
validation and decoding into typed events for recstream itself."""

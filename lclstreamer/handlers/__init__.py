"""Data handlers: where serialized messages go (files, NNG, ZeroMQ, nowhere)."""

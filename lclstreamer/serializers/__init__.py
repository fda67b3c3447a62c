"""Serializers: batches -> messages (bytes-like)."""

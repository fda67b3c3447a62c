"""The user's side: `lclstream` (never imports the service; shares lclstream_api.models)."""

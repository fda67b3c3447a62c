"""lclstream_api — placeholder until its issue lands."""

"""lclstreamer — placeholder until its issue lands."""

"""psik — placeholder until its issue lands."""

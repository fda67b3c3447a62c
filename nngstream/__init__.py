"""nngstream — placeholder until its issue lands."""

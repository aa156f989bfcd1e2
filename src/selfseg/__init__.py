"""selfseg."""

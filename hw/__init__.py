"""pwlnet.hw."""

"""pwlnet.boards."""

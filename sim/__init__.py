"""pwlnet.sim."""

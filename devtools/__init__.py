"""Dev tooling: the local stack, sandboxes, the demo and synthetic data. Nothing in production imports it."""

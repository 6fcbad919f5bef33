"""The daily assets, one module per domain."""

"""Synthetic users, items, events, defects and feature tables for the demo, tests and benchmarks."""

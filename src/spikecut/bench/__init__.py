"""Benchmarks: simulation speed against peer libraries, and anytime wall-clock."""

"""Benchmarks and experiments (not part of the test run); benchmarks/README.md lists them."""

"""Accuracy experiments (E ids of docs/benchmarks.md) on planted worlds and generated images."""

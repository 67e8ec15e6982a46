"""Orchestration over the cache and the heads: train, evaluate, predict, add labels, demo."""

"""Baseline defenses: density-clustering filter-and-retrain and the pruning ensemble."""

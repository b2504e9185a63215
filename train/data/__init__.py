"""Datasets, sampling, and class-incremental protocols."""

"""stpr.runtime: the torch-free device side (the bundle it reads: docs/bundle.md)."""

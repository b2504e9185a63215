"""stpr.runtime: the torch-free device side (see ARCHITECTURE.md; the `stpr-run` issue)."""

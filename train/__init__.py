"""stpr.train: frozen CLIP + shared adapters, per-task experts, FSSD, TD-MoE, and `stpr-train`."""

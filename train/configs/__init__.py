"""Built-in YAML configs (package data)."""

"""stpr.runtime: the torch-free device side (the bundle it reads: docs/bundle.md).

Its rooms, each importing only from the ones before it (tests/test_import_rules.py):
the top level (contract, errors, atomic, exits), `model`, `text`, `io`, `bundle`,
`engine`, `learn`, `serve`, `cli`. `entry` is stpr-run's entry point.
"""

"""The commands: stpr-run (its options, sources and the streaming loop), stpr-classes and
stpr-learn."""

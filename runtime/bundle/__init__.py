"""The bundle on disk: its manifest and fields, reading it (load), the head's files,
building a new bundle folder, publishing it behind a link, and the class overlay beside
it."""

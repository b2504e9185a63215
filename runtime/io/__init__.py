"""What comes in and goes out of the stream: sources (cameras, files, URLs, frame folders),
clips, the annotated video, the event log, the overlay and the SIGTERM handling."""

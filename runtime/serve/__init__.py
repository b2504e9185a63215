"""`stpr-run --serve`: the web app and JSON API on the device (docs/web.md).

The streaming loop stays the one thread that predicts. It hands the server what it
made (the latest frame, events, the source's state) through a `Hub` and never waits
on a client; the server (Starlette on uvicorn, in its own thread) does all the
per-client work: drawing, JPEG encoding, JSON.
"""

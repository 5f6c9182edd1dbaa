"""Session timelines: each lab session recorded as one asciicast v2 record (terminal output and
input, with markers for state changes, steps, checks, checkpoints and reverts), replayed on a page.

The host side writes the record (labs/host/recorder.py) into a local file while the session runs
and, when it ends, stores it gzipped in the `SessionTimeline` table: any web process reads it from
there, whichever host recorded it. Markers reach the recorder through Redis (`marks.py`), since
checks run in another process than the console relay.
"""

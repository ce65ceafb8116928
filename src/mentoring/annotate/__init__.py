"""The mentoring web interface: operators confirm or reject the mined areas of a task set.

- :mod:`.db`: the task set, the leases and the append-only event log in SQLite (WAL); the one
  place state lives, so a restarted server continues where it stopped.
- :mod:`.images`: the task set's images, served by task image id only, never by path.
- :mod:`.app`: the FastAPI application (server-rendered pages, a JSON API, one static script).
- :mod:`.export`: the database as a feedback file that ``mentoring mentor import`` reads.

See ``docs/annotate.md``.
"""

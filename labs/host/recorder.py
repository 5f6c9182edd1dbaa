"""Recording a session's timeline on the host: one append-only asciicast v2 file per session while
it runs (under LABS_TIMELINE_DIR), stored gzipped in the DB (`SessionTimeline`) once it has ended.

The console relay's threads hand it output, input and resizes; markers come from Redis
(labs/timeline/marks.py), drained by the relay manager's poll, which also flushes. Writes are
buffered (the terminal never waits for a disk) and flushed at least every FLUSH_S or FLUSH_BYTES;
a host agent that is killed loses at most that, and the next one appends to the same file.
"""

from __future__ import annotations

import codecs
import gzip
import logging
import threading
import time
from pathlib import Path
from typing import Any

import redis
from django.conf import settings

from labs.models import LabSession
from labs.redis_names import timeline_marks_key
from labs.states import ENDED, SessionState
from labs.timeline import cast, marks
from labs.timeline.models import SessionTimeline

log = logging.getLogger(__name__)
FLUSH_S = 0.5
FLUSH_BYTES = 16 * 1024
# Past the cap, markers still go in (a few hundred bytes each, and few) up to this much more.
MARKER_RESERVE_BYTES = 64 * 1024
FINISHED_STATES = (*ENDED, SessionState.DESTROYED)
FINISH_EVERY_S = 2.0  # how often the relay manager looks for ended sessions' records to store
SETTLE_S = 2.0  # after the session ended: a late marker (the last check's verdict) still gets in


def record_path(session_id: str) -> Path:
    return Path(settings.LABS_TIMELINE_DIR) / f"{session_id}.cast"


class Recorder:
    """One session's record file, appended to by the relay's threads (thread-safe)."""

    def __init__(self, session_id: str, max_bytes: int | None = None, resumed_note: bool = True):
        self.session_id = session_id
        self.max_bytes = max_bytes if max_bytes is not None else int(settings.LABS_TIMELINE_MAX_BYTES)
        self.path = record_path(session_id)
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self._buffered = 0
        self._last_flush = time.monotonic()
        self.closed = False
        self._decoders = {code: codecs.getincrementaldecoder("utf-8")("replace") for code in ("o", "i")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.start, self.last_t, self.size, self.cut = self._open(resumed_note)

    def _open(self, resumed_note: bool) -> tuple[float, float, int, bool]:
        """(start epoch, last event's t, size, cut): a new file gets a header; an existing one (the
        agent restarted) is appended to, after dropping a last line that a kill cut short."""
        self._file = open(self.path, "a+b")  # noqa: SIM115  (closed by close())
        self._file.seek(0)
        data = self._file.read()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            self._file.truncate(len(data))
        try:
            header, events = cast.parse(data.decode("utf-8", errors="replace"))
        except cast.CastError:  # empty, or a header cut short: start over
            self._file.truncate(0)
            now = time.time()
            self._file.write(cast.header_line(now, title=self.session_id).encode())
            self._file.flush()
            return now, 0.0, self._file.tell(), False
        start = cast.started_at(header)
        last_t = events[-1].t if events else 0.0
        cut = any((e.mark or {}).get("kind") == "cut" for e in events)
        if resumed_note:  # visible in the replay: the host agent restarted here
            last_t = max(last_t, time.time() - start)
            self._file.write(cast.event_line(last_t, "m", cast.mark_data("resumed")).encode())
            self._file.flush()
        return start, last_t, self._file.tell(), cut

    def output(self, data: bytes) -> None:
        self._stream("o", data)

    def input(self, data: bytes) -> None:
        self._stream("i", data)

    def resize(self, cols: int, rows: int) -> None:
        self._append(time.time() - self.start, "r", f"{cols}x{rows}", marker=False)

    def _stream(self, code: str, data: bytes) -> None:
        with self._lock:
            text = self._decoders[code].decode(data)
        if text:
            self._append(time.time() - self.start, code, text, marker=False)

    def marker(self, at: float, kind: str, **fields: Any) -> None:
        self._append(at - self.start, "m", cast.mark_data(kind, **fields), marker=True)

    def _append(self, t: float, code: str, data: str, marker: bool) -> None:
        with self._lock:
            if self.closed:  # the relay stopped; a thread's last bytes come after
                return
            # A marker may be drained after later output: its line comes after theirs in the file, with
            # its own time; finish() puts the stored record in time order.
            t = max(t, 0.0)
            line = cast.event_line(t, code, data)
            size = len(line.encode())
            if not marker and (self.cut or self.size + size > self.max_bytes):
                if self.cut:  # past the cut, the terminal is not recorded (even a chunk that would fit)
                    return
                self.cut = True  # the record says where it stopped taking the terminal; the lab goes on
                line = cast.event_line(t, "m", cast.mark_data("cut", max_bytes=self.max_bytes))
                size = len(line.encode())
            if self.size + size > self.max_bytes + MARKER_RESERVE_BYTES:
                return
            self.last_t = max(self.last_t, t)
            self.size += size
            self._buffer.append(line)
            self._buffered += size
            due = self._buffered >= FLUSH_BYTES or time.monotonic() - self._last_flush >= FLUSH_S
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._buffer and not self.closed:
                try:
                    self._file.write("".join(self._buffer).encode())
                    self._file.flush()
                except OSError as exc:  # a full disk costs these events, never the terminal
                    log.warning("timeline of %s: %d events lost: %s", self.session_id, len(self._buffer), exc)
                self._buffer.clear()
                self._buffered = 0
            self._last_flush = time.monotonic()

    def take_marks(self, client: redis.Redis) -> None:
        for item in marks.drain(client, self.session_id):
            fields = {k: v for k, v in item.items() if k not in ("at", "kind")}
            self.marker(float(item["at"]), str(item["kind"]), **fields)

    def tick(self, client: redis.Redis) -> None:
        """The relay manager's poll: markers in, buffer out."""
        try:
            self.take_marks(client)
        except redis.RedisError as exc:
            log.info("timeline of %s: markers wait (Redis unavailable: %s)", self.session_id, exc)
        self.flush()

    def close(self) -> None:
        self.flush()
        with self._lock:
            self.closed = True
            self._file.close()


def in_time_order(text: str) -> str:
    """The record with its events sorted by time (stable: same-time events keep their order)."""
    header, events = cast.parse(text)
    lines = [cast.header_line(cast.started_at(header), header.get("width", 80), header.get("height", 24),
                              header.get("title", ""))]  # fmt: skip
    lines += [cast.event_line(e.t, e.code, e.data) for e in sorted(events, key=lambda e: e.t)]
    return "".join(lines)


def finish(session_id: str, client: redis.Redis) -> bool:
    """Store the ended session's record gzipped in the DB and remove the file; True if stored."""
    path = record_path(session_id)
    session = LabSession.objects.filter(pk=session_id).only("state", "current_step").first()
    if session is None:  # the session (its learner) was deleted: so is its record
        path.unlink(missing_ok=True)
        return False
    recorder = Recorder(session_id, resumed_note=False)
    try:
        recorder.take_marks(client)
        recorder.flush()
        _, events = cast.parse(path.read_text(errors="replace"))
        last_state = next((e.mark.get("state") for e in reversed(events) if e.mark and e.mark["kind"] == "state"), None)
        if last_state != session.state:  # the final state, whichever process wrote it and when
            recorder.marker(time.time(), "state", state=session.state, step=session.current_step)
    finally:
        recorder.close()
    raw = in_time_order(path.read_text(encoding="utf-8", errors="replace")).encode()
    SessionTimeline.objects.update_or_create(
        session_id=session_id,
        defaults={"cast_gz": gzip.compress(raw, 6), "raw_bytes": len(raw), "duration_s": recorder.last_t,
                  "cut": recorder.cut},
    )  # fmt: skip
    path.unlink(missing_ok=True)
    client.delete(timeline_marks_key(session_id))
    log.info("timeline of %s stored: %d bytes, %.0f s", session_id, len(raw), recorder.last_t)
    return True


def finish_ended(host: str, recording: set[str], client: redis.Redis) -> None:
    """Store the records of this host's sessions that have ended (however they ended: while the agent
    was down, too). `recording`: sessions whose relay still runs."""
    directory = Path(settings.LABS_TIMELINE_DIR)
    if not directory.is_dir():
        return
    waiting = {p.stem for p in directory.glob("*.cast")} - recording
    if not waiting:
        return
    rows = LabSession.objects.filter(pk__in=waiting).values_list("id", "host", "state", "ended_at", "updated_at")
    known = set()
    for session_id, session_host, state, ended_at, updated_at in rows:
        known.add(session_id)
        if session_host != host or state not in FINISHED_STATES:
            continue
        since = (ended_at or updated_at).timestamp()
        if time.time() - since < SETTLE_S:
            continue
        try:
            finish(session_id, client)
        except Exception:  # one bad record must not stop the others (nor the relay)
            log.exception("timeline of %s: storing it failed; trying again later", session_id)
    for session_id in waiting - known:
        record_path(session_id).unlink(missing_ok=True)  # its session was deleted

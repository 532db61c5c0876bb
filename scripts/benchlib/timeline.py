"""livecopy's own timeline of a run, read from its events table."""

import re
import statistics


def db_rows(db, sql, arguments=()):
    """A read-only query on a livecopy database (sqlite3 is in the standard library)."""
    import sqlite3
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, arguments).fetchall()
    finally:
        connection.close()


def event_label(kind, to_state, detail):
    if kind == "transition":
        return f"→ {to_state}"
    if kind in ("intent", "outcome"):
        return f"{kind} {detail.split(':', 1)[0]}"
    words = []
    for word in detail.split()[:3]:
        if "/" in word:
            break
        # Numbers (job ids such as livecopy-mirror-12) differ from disk to disk and run to
        # run; the label must not.
        words.append(re.sub(r"\d+", "N", word))
    return "note: " + " ".join(words)


def livecopy_timeline(db, spawn_wall, exit_wall, plan_id=None):
    """The newest plan's (or plan_id's) events as (label, ms since the process was spawned),
    then the process exit."""
    if plan_id is None:
        plan_id = db_rows(db, "SELECT max(id) FROM plans")[0][0]
    rows = db_rows(db, "SELECT kind, to_state, detail, at, disk_id FROM events WHERE plan_id = ? ORDER BY id",
                   (plan_id,))
    timeline = [(("plan " if disk is None and kind == "transition" else "") + event_label(kind, to, detail),
                 (at - spawn_wall) * 1000) for kind, to, detail, at, disk in rows]
    timeline.append(("process exit", (exit_wall - spawn_wall) * 1000))
    return timeline


def median_timeline(timelines):
    """Medians per step over runs with the same sequence of steps."""
    if not timelines:
        return []
    shape = [label for label, _ in timelines[0]]
    same = [t for t in timelines if [label for label, _ in t] == shape]
    return [(label, statistics.median(t[i][1] for t in same)) for i, label in enumerate(shape)]


def timeline_table(timeline):
    lines = ["| step (event written, in order) | ms since spawn | Δ ms |", "|---|---:|---:|"]
    previous = 0.0
    for label, ms in timeline:
        lines.append(f"| {label} | {ms:.1f} | {ms - previous:+.1f} |")
        previous = ms
    return lines

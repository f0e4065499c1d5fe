"""`ringshm top`: a live view of this user's rings and queues.

Every ``--interval`` seconds each ring is sampled: its ``stats()`` read
through a fresh attachment, the time of the reading noted; rates are the
counters' deltas between two samples of the same ring divided by the time
between those two readings.

Read-only in spirit: a sample opens the ring (a mapping and a descriptor,
which write nothing), reads its counters with ``stats()`` (loads only; no
lock, so no liveness slot is claimed: a slot is taken on a process's first
lock, libringshm/src/locks.c) and detaches with ``_detach_quietly()``, which,
unlike close(), does not wake the ring's wait queues (a wake bumps their
futex words).  The segment's bytes are as they were.

An entry that cannot be read (another user's, not a ring, damaged, of
another layout) is a row with the reason; a ring removed meanwhile is
shown as ``gone`` for one refresh, then disappears.  A topic is a row of
kind ``topic``: IN/s is its publish rate, OUT/s what its subscribers take
(summed), FILL its log's (see topic_stats).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import select
import stat
import struct
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from ._backing import SHM_DIR, SHM_PREFIX, companion_path, shm_path
from ._ring import HEADER_SIZE, LAYOUT_VERSION
from .census import _holds_magic, escape_name, human_size
from .errors import (
    RingCorrupted,
    RingError,
    RingNotFound,
    RingPermissionError,
    RingWrongKind,
)
from .watcher import open_same_file, sysv_segments

if TYPE_CHECKING:
    from rich.table import Table

    from .ring import Ring

__all__ = ["SORT_KEYS", "Sample", "take_samples", "compare", "sort_rows", "render", "run"]

_MAGIC = b"RINGSHM\0"
_TOPIC_MAGIC = b"RSTOPIC\0"   # a topic (docs/FORMAT.md, "Topics")
_CLAIMED = struct.pack("<Q", 0x54494E49474E4952)   # a creator claimed it, header coming
_IDENTITY = struct.Struct("<8sI")   # magic, layout version (docs/FORMAT.md)

Key = tuple[str, str]   # (kind, name)


@dataclass
class Sample:
    """One reading of one /dev/shm entry or System V ring."""

    kind: str                      # "shm" or "sysv"
    name: str                      # as listed (a sysv ring: "0xKEY")
    path: str
    taken: float                   # time.monotonic() just after stats()
    instance: tuple[Any, ...] = ()  # which ring this is, whatever its name
    stats: Optional[dict[str, Any]] = None
    state: str = "ok"              # ok, shutdown, or why there are no stats
    error: Optional[str] = None
    side_files: int = 0
    side_bytes: int = 0
    topic: bool = False            # a topic: stats as topic_stats() gives them


# -- sampling ------------------------------------------------------------------

def matches(name: str, pattern: Optional[str]) -> bool:
    """``pattern`` with a glob character (``*?[``) is a glob over the whole
    name, else a substring; None matches everything."""
    if not pattern:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def side_files() -> dict[tuple[bool, str], Any]:
    """This user's queue side files, by ring (ringshm/_sidefile.py,
    file_groups: a ring's identity, or a 0.2 ring's name)."""
    from ._sidefile import file_groups
    return file_groups()


def topic_stats(topic: Any) -> dict[str, Any]:
    """A topic's counters under a ring's names, for the same columns: in is
    what was published, out what its subscribers took (the sum over those
    subscribed now), messages the count published; it has no get waits."""
    stats = topic.stats()
    subscribers = topic.subscribers()
    return dict(stats, messages=stats["published"], messages_put=stats["published"],
                bytes_put=stats["bytes_published"], put_waits=stats["publish_waits"],
                put_timeouts=stats["publish_timeouts"],
                messages_got=sum(sub.messages for sub in subscribers),
                bytes_got=sum(sub.bytes for sub in subscribers), get_waits=0, get_timeouts=0)


def _read(sample: Sample, attach: Callable[[], Ring],
          attach_topic: Optional[Callable[[], Any]] = None) -> Optional[Sample]:
    """Fill ``sample`` from the ring ``attach`` opens (a topic: the one
    ``attach_topic`` opens); None if it is gone."""
    try:
        ring = attach()
    except RingWrongKind:
        if attach_topic is None:
            sample.state = "topic"
            return sample
        sample.topic = True
        return _read(sample, attach_topic)
    except RingNotFound:
        return None
    except RingCorrupted as exc:
        sample.state, sample.error = "corrupt", str(exc)
        return sample
    except RingPermissionError as exc:
        sample.state, sample.error = "no access", str(exc)
        return sample
    except (RingError, OSError, ValueError) as exc:
        sample.state, sample.error = "error", str(exc)
        return sample
    try:
        stats = topic_stats(ring) if sample.topic else ring.stats()
        sample.taken = time.monotonic()
        sample.instance = (ring.identity, ring._inode, ring.sysv_key)
    except (RingError, ValueError) as exc:
        sample.state, sample.error = "error", str(exc)
        return sample
    finally:
        ring._detach_quietly()   # close() would write (wake) the wait queues
    sample.stats = stats
    sample.state = "shutdown" if stats["shutdown"] else "ok"
    return sample


def _precheck(path: str, st: os.stat_result) -> Optional[tuple[str, str]]:
    """(state, why) when the file at ``path`` is plainly no ring of this
    layout, read without attaching (Ring.open would wait a second for a
    header that never comes); None to go on and open it.

    Raises:
        FileNotFoundError: it is gone, or another file took its name.
    """
    fd = open_same_file(path, st.st_dev, st.st_ino)
    if fd is None:
        raise FileNotFoundError(path)
    try:
        head = os.pread(fd, _IDENTITY.size, 0)
    finally:
        os.close(fd)
    if st.st_size < HEADER_SIZE:
        return "corrupt", f"truncated: {st.st_size} bytes, less than one header ({HEADER_SIZE})"
    if len(head) < _IDENTITY.size:
        return "corrupt", "truncated"
    magic, version = _IDENTITY.unpack(head)
    if magic in (bytes(8), _CLAIMED):
        return "no header", "no header yet (being created, or blank)"
    if magic not in (_MAGIC, _TOPIC_MAGIC):
        return "not a ring", "not a ringshm segment (bad magic)"
    if version != LAYOUT_VERSION:
        return f"layout {version}", f"a ring of layout {version} (this ringshm reads " \
                                    f"{LAYOUT_VERSION})"
    return None


def _sample_shm(name: str) -> Optional[Sample]:
    from .ring import Ring
    path = shm_path(name)
    sample = Sample("shm", name, path, time.monotonic())
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            sample.state = "not a ring"
            sample.error = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            return sample
        if st.st_uid != os.geteuid():
            sample.state = "other user"   # never read (docs/DESIGN.md, "The owner rule")
            return sample
        reason = _precheck(path, st)
    except FileNotFoundError:
        return None
    except OSError as exc:
        sample.state, sample.error = "error", str(exc)
        return sample
    if reason is not None:
        sample.state, sample.error = reason
        return sample
    from .topic import Topic
    return _read(sample, lambda: Ring.open(name), lambda: Topic.open(name))


def _sample_sysv(seg: dict[str, int]) -> Optional[Sample]:
    from .ring import Ring
    from .topic import Topic
    key = seg["key"]
    sample = Sample("sysv", f"0x{key:08x}", companion_path(key), time.monotonic())
    return _read(sample, lambda: Ring.open(sysv_key=key), lambda: Topic.open(sysv_key=key))


def _sysv_candidates() -> Iterator[dict[str, int]]:
    """This user's System V rings, as `ringshm ls` finds them."""
    euid = os.geteuid()
    for seg in sorted(sysv_segments(), key=lambda seg: seg["key"]):
        if seg["key"] == 0 or seg["uid"] != euid or seg["cuid"] != euid:
            continue
        if not os.path.lexists(companion_path(seg["key"])):
            if seg["size"] < HEADER_SIZE or not _holds_magic(seg["shmid"]):
                continue
        yield seg


def shm_names() -> list[str]:
    """The names of the ``ringshm.*`` entries of /dev/shm."""
    try:
        entries = sorted(os.listdir(SHM_DIR))
    except OSError:
        return []
    return [e[len(SHM_PREFIX):] for e in entries
            if e.startswith(SHM_PREFIX) and len(e) > len(SHM_PREFIX)]


def take_samples(pattern: Optional[str] = None) -> dict[Key, Sample]:
    """One sample of every ring of this user whose name matches ``pattern``
    (see matches); entries gone while we looked are left out."""
    samples: dict[Key, Sample] = {}
    sides = side_files()
    for name in shm_names():
        if not matches(name, pattern):
            continue
        sample = _sample_shm(name)
        if sample is not None:
            # Side files go with the ring by identity (a new ring of the
            # same name never claims the old one's).
            from ._sidefile import attribute
            row: dict[str, Any] = {"kind": "shm", "name": name, "identity":
                                   sample.instance[0] if sample.instance else ""}
            attribute([row], sides)
            sample.side_files, sample.side_bytes = row["side_files"], row["side_bytes"]
            samples[("shm", name)] = sample
    for seg in _sysv_candidates():
        if matches(f"0x{seg['key']:08x}", pattern):
            sample = _sample_sysv(seg)
            if sample is not None:
                samples[("sysv", sample.name)] = sample
    return samples


# -- rows ------------------------------------------------------------------------

_RATES = {
    "messages_in_per_s": ("messages_put",),
    "messages_out_per_s": ("messages_got",),
    "bytes_in_per_s": ("bytes_put",),
    "bytes_out_per_s": ("bytes_got",),
    "put_waits_per_s": ("put_waits",),
    "get_waits_per_s": ("get_waits",),
    "waits_per_s": ("put_waits", "get_waits"),
    "timeouts_per_s": ("put_timeouts", "get_timeouts"),
}


def _row(sample: Sample) -> dict[str, Any]:
    # KIND: the backing (shm, sysv), or "topic" for a topic of either.
    row: dict[str, Any] = {"name": sample.name,
                           "kind": "topic" if sample.topic else sample.kind, "path": sample.path,
                           "state": sample.state, "error": sample.error}
    stats = sample.stats
    row.update(capacity=None, used_bytes=None, fill=None, messages=None)
    row.update(dict.fromkeys(_RATES))
    row.update(lock_recoveries=None, side_files=sample.side_files,
               side_bytes=sample.side_bytes, creator_pid=None, creator_alive=None,
               shutdown=None, interval=None)
    if stats is not None:
        row.update(capacity=stats["capacity"], used_bytes=stats["used_bytes"],
                   fill=round(100.0 * stats["used_bytes"] / stats["capacity"], 1),
                   messages=stats["messages"], lock_recoveries=stats["lock_recoveries"],
                   creator_pid=stats["creator_pid"], creator_alive=stats["creator_alive"],
                   shutdown=stats["shutdown"])
    return row


def compare(before: dict[Key, Sample], after: dict[Key, Sample]) -> list[dict[str, Any]]:
    """The rows of ``after``, with the rates since ``before`` where the same
    ring was read both times; a ring of ``before`` missing from ``after``
    is a row in state ``gone``."""
    rows = []
    for key, now in after.items():
        row = _row(now)
        then = before.get(key)
        if (now.stats is not None and then is not None and then.stats is not None
                and then.instance == now.instance and now.taken > then.taken):
            elapsed = now.taken - then.taken
            for field, counters in _RATES.items():
                delta = sum(now.stats[c] - then.stats[c] for c in counters)
                row[field] = max(delta, 0) / elapsed
            row["interval"] = elapsed
        rows.append(row)
    for key, then in before.items():
        if key not in after:
            row = _row(then)
            row.update(state="gone", error=None)
            rows.append(row)
    return rows


def _total(*fields: str) -> Callable[[dict[str, Any]], Optional[float]]:
    def value(row: dict[str, Any]) -> Optional[float]:
        values = [row[f] for f in fields]
        return None if any(v is None for v in values) else float(sum(values))
    return value


SORT_KEYS: dict[str, Callable[[dict[str, Any]], Optional[float]]] = {
    "rate": _total("messages_in_per_s", "messages_out_per_s"),
    "in": _total("messages_in_per_s"),
    "out": _total("messages_out_per_s"),
    "bytes": _total("bytes_in_per_s", "bytes_out_per_s"),
    "fill": _total("fill"),
    "capacity": _total("capacity"),
    "waits": _total("waits_per_s"),
    "recoveries": _total("lock_recoveries"),
    "side": _total("side_bytes"),
}
SORT_CHOICES = ["name", "kind", *SORT_KEYS]


def sort_rows(rows: list[dict[str, Any]], key: str = "name") -> list[dict[str, Any]]:
    """By name (or kind, then name), else the largest first, rows without
    the value last, ties by name."""
    by_name = sorted(rows, key=lambda row: (row["name"], row["kind"]))
    if key == "name":
        return by_name
    if key == "kind":
        return sorted(by_name, key=lambda row: row["kind"])
    value = SORT_KEYS[key]

    def order(row: dict[str, Any]) -> tuple[bool, float]:
        v = value(row)
        return (v is None, -(v or 0.0))
    return sorted(by_name, key=order)


# -- the table ---------------------------------------------------------------------

def _count(value: Optional[float]) -> str:
    if value is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def _bytes(value: Optional[float]) -> str:
    return "-" if value is None else human_size(int(value))


COLUMNS = ("NAME", "KIND", "CAPACITY", "FILL", "IN/s", "OUT/s", "BYTES IN/s", "BYTES OUT/s",
           "WAITS/s", "RECOVERIES", "SIDE FILES", "CREATOR", "STATE")


def cells(row: dict[str, Any]) -> tuple[str, ...]:
    """One table row as text (the name escaped as `ringshm ls` prints it)."""
    has = row["capacity"] is not None
    state = row["state"] + (f": {row['error']}" if row["error"] else "")
    side = "-" if not row["side_files"] else \
        f"{_bytes(row['side_bytes'])} ({row['side_files']})"
    creator = "-" if not has else \
        f"{row['creator_pid']} {'alive' if row['creator_alive'] else 'dead'}"
    return (escape_name(row["name"]), row["kind"], _bytes(row["capacity"]),
            "-" if row["fill"] is None else f"{row['fill']:.1f}%",
            _count(row["messages_in_per_s"]), _count(row["messages_out_per_s"]),
            _bytes(row["bytes_in_per_s"]), _bytes(row["bytes_out_per_s"]),
            _count(row["waits_per_s"]), "-" if not has else str(row["lock_recoveries"]),
            side, creator, state)


# Columns left out, in this order, while the table is wider than the
# terminal; NAME, FILL, IN/s, OUT/s and STATE always stay.
_DROP_ORDER = ("SIDE FILES", "KIND", "CREATOR", "RECOVERIES", "BYTES OUT/s", "BYTES IN/s",
               "CAPACITY", "WAITS/s")
_PADDING = 3   # box.SIMPLE_HEAD: a space either side of a cell, and a divider
_NAME_FOLD = 40
_STATE_MIN = 12


def fit_columns(table: list[tuple[str, ...]], width: Optional[int]) -> list[int]:
    """The indexes of COLUMNS to show so that ``table`` (rows of cells)
    fits in ``width`` characters; all of them when width is None."""
    keep = list(range(len(COLUMNS)))
    if width is None:
        return keep
    widths = [max([len(COLUMNS[i])] + [len(row[i]) for row in table]) + _PADDING
              for i in keep]
    # Columns go before a name folds (up to _NAME_FOLD characters of it);
    # the state folds onto more lines down to _STATE_MIN.
    least = {COLUMNS.index("NAME"): _NAME_FOLD + _PADDING,
             COLUMNS.index("STATE"): _STATE_MIN + _PADDING}
    for column in _DROP_ORDER:
        need = 1 + sum(min(widths[i], least.get(i, widths[i])) for i in keep)
        if need <= width:
            break
        keep.remove(COLUMNS.index(column))
    return keep


def render(rows: list[dict[str, Any]], title: str = "", width: Optional[int] = None) -> Table:
    """A rich Table of ``rows`` (every cell plain text: a name holding
    ``[bold]`` is printed as it is, never read as markup), with the columns
    that fit in ``width`` (None: all)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text
    table = Table(title=title or None, box=box.SIMPLE_HEAD, title_justify="left")
    texts = [cells(row) for row in rows]
    keep = fit_columns(texts, width)
    for i in keep:
        column = COLUMNS[i]
        numeric = column not in ("NAME", "KIND", "CREATOR", "STATE")
        flexible = column in ("NAME", "STATE")
        least = None
        if flexible:
            longest = max([len(column)] + [len(text[i]) for text in texts])
            least = min(longest, _NAME_FOLD if column == "NAME" else _STATE_MIN)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold",
                         no_wrap=not flexible, min_width=least)
    for row, text in zip(rows, texts):
        style = "dim" if row["state"] == "gone" else \
            ("yellow" if row["state"] not in ("ok", "shutdown") else "")
        table.add_row(*(Text(text[i]) for i in keep), style=style)
    return table


# -- the command ---------------------------------------------------------------------

class _Keys:
    """Waits for the next refresh, returning early on 'q' when stdin is a
    terminal (read one key at a time, restored on exit)."""

    def __init__(self) -> None:
        self.fd: Optional[int] = None
        self.saved: Any = None

    def __enter__(self) -> _Keys:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if sys.stdin is not None and sys.stdin.isatty():
                import termios
                import tty
                fd = sys.stdin.fileno()
                self.saved = termios.tcgetattr(fd)
                tty.setcbreak(fd)
                self.fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.fd is not None:
            import termios
            with contextlib.suppress(OSError):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def quit_within(self, seconds: float) -> bool:
        """Wait ``seconds``; True if 'q' was pressed meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.fd is None:
                time.sleep(left)
                continue
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                key = os.read(self.fd, 1)
                if key in (b"q", b"Q"):
                    return True
                if not key:
                    self.fd = None   # end of input: keep refreshing


def _title(rows: list[dict[str, Any]], interval: float, sort: str) -> str:
    return (f"ringshm top: {len(rows)} rings, every {interval:g}s, sorted by {sort}"
            f" ({time.strftime('%H:%M:%S')}; q quits)")


def run(interval: float = 1.0, sort: str = "name", pattern: Optional[str] = None,
        once: bool = False, as_json: bool = False) -> int:
    """The ``ringshm top`` command."""
    from rich.console import Console
    before = take_samples(pattern)
    if once:
        time.sleep(interval)
        rows = sort_rows(compare(before, take_samples(pattern)), sort)
        if as_json:
            print(json.dumps(rows, indent=2))
            return 0
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 200))   # every column
        console.print(render(rows, width=console.width))
        return 0
    from rich.live import Live
    console = Console()
    rows = sort_rows(compare({}, before), sort)
    with _Keys() as keys, Live(render(rows, _title(rows, interval, sort), console.width),
                               console=console, screen=True, auto_refresh=False) as live:
        while not keys.quit_within(interval):
            after = take_samples(pattern)
            rows = sort_rows(compare(before, after), sort)
            live.update(render(rows, _title(rows, interval, sort), console.width),
                        refresh=True)
            before = after
    return 0

"""The ``ringshm`` command: create, list, inspect and remove rings, move
lines between the shell and a ring, and run the demo, benchmarks and stress
test.

Exit status: 0 on success, 1 on a ring or OS error (one line on stderr, never
a traceback), 2 on bad usage, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from ._cli_common import (
    PROG,
    _describe,
    _error,
    _shown,
    parse_count,
    parse_history,
    parse_mode,
    parse_seconds,
    parse_size,
    parse_sysv_key,
    print_info,
    print_messages,
    send_stream,
    subscriber_text,
)
from ._typing import Buffer
from ._version import __version__
from .census import human_size
from .errors import RingCorrupted, RingError

if TYPE_CHECKING:
    from .ring import Ring

# The argument types and send_stream stay importable from here (ringshm.bench).
__all__ = ["build_parser", "main", "parse_count", "parse_mode", "parse_seconds", "parse_size",
           "parse_sysv_key", "send_stream"]

# ringshm.top.SORT_CHOICES, spelled out: --help works without the compiled core.
TOP_SORT_KEYS = ("name", "kind", "rate", "in", "out", "bytes", "fill", "capacity", "waits",
                 "recoveries", "side")


# -- commands ----------------------------------------------------------------

def _ring_cls() -> type[Ring]:
    # Imported on use so that `ringshm --help` and the argument errors work
    # even where the compiled core is missing or broken.
    from .ring import Ring
    return Ring


def cmd_create(args: argparse.Namespace) -> int:
    """Create a persistent ring (or topic); it stays until ``ringshm rm``."""
    from .errors import RingNoSpace
    if args.history is not None and not args.topic:
        raise ValueError("--history is a topic's: give --topic too")
    try:
        if args.topic:
            from .cli_topic import create_topic
            return create_topic(args)
        ring = _ring_cls().create(args.name, capacity=args.capacity, mode=args.mode,
                                  persist=True, max_messages=args.max_messages,
                                  reserve=not args.no_reserve)
    except RingNoSpace as exc:
        # The core's advice names reserve=False; here it is --no-reserve,
        # and the capacity asked for may have been rounded up.
        made = max(4096, 1 << (args.capacity - 1).bit_length())
        rounded = (f"--capacity {human_size(args.capacity)} is rounded up to "
                   f"{human_size(made)} (a power of two), so " if made != args.capacity else "")
        free = "an unknown number of" if exc.free is None else str(exc.free)
        _error(f"no room for ring {_shown(args.name)}: {rounded}it needs {exc.needed} bytes "
               f"and the file system has {free} bytes free (a smaller --capacity, more room, "
               f"e.g. docker run --shm-size, or --no-reserve)")
        return 1
    made = ring.capacity
    ring.close()
    if made != args.capacity:
        # Capacities are powers of two of at least 4096.
        print(f"created {args.name}: capacity {made} bytes ({human_size(made)}), "
              f"rounded up from {args.capacity} ({human_size(args.capacity)})")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    """List every ring on the machine: named ones, then System V ones."""
    from ._sidefile import attribute, file_groups, orphans
    from .census import census, escape_name
    from .topic import Topic
    rows = census(all_users=args.all_users, open_topic=Topic.open)
    groups = file_groups()
    # Queue side files go with their ring's row; those whose ring's name
    # is gone are rows of their own, "orphaned" when `gc` would remove them.
    unclaimed = attribute(rows, groups)
    doomed = {id(group) for group in orphans(groups)} if unclaimed else set()
    for row in rows:
        row["state"] = ", ".join(row.pop("states"))
        for key in ("dev", "ino"):
            row.pop(key, None)
    side_rows: list[dict[str, Any]] = [
        {"kind": "side files", "name": group.key, "legacy": group.legacy,
         "side_files": group.files, "side_bytes": group.bytes,
         "state": "orphaned" if id(group) in doomed else "in use"}
        for group in sorted(unclaimed, key=lambda group: group.key)]
    if args.json:
        print(json.dumps(rows + side_rows, indent=2, default=str))
        return 0
    counters = ("CAPACITY", "USED", "MESSAGES", "CREATOR", "ALIVE", "SIDE", "STATE")
    named: list[tuple[str, ...]] = [("NAME",) + counters]
    sysv: list[tuple[str, ...]] = [("KEY", "SHMID", "OWNER", "NATTCH") + counters]
    # A topic's subscribers: lines under its row, by the row's index.
    named_notes: dict[int, list[str]] = {}
    sysv_notes: dict[int, list[str]] = {}
    for row in rows:
        if row["kind"] == "sysv":
            sysv_notes[len(sysv)] = _subscriber_lines(row)
            sysv.append((row["name"], str(row["shmid"]), _user(row["uid"]),
                         str(row["nattch"])) + _counter_cells(row))
        else:
            named_notes[len(named)] = _subscriber_lines(row)
            named.append((escape_name(row["name"]),) + _counter_cells(row))
    _print_table(named, named_notes)
    if len(sysv) > 1:
        print("\nSystem V rings (ipcs -m):")
        _print_table(sysv, sysv_notes)
    if side_rows:
        print("\nQueue side files whose ring's name is gone (ring identity; a 0.2 ring's name):")
        _print_table([("RING", "FILES", "BYTES", "STATE")] +
                     [(escape_name(row["name"]), str(row["side_files"]),
                       human_size(row["side_bytes"]), row["state"]) for row in side_rows])
    return 0


def _counter_cells(row: dict[str, Any]) -> tuple[str, ...]:
    side = human_size(row["side_bytes"]) if row.get("side_files") else "-"
    if "capacity" not in row:
        return ("-", "-", "-", "-", "-", side, row["state"])
    state = row["state"]
    if row.get("segment") == "topic":
        count = row["subscribers"]
        state += f" ({count} subscriber{'' if count == 1 else 's'})"
    return (human_size(row["capacity"]), human_size(row["used_bytes"]), str(row["messages"]),
            str(row["creator_pid"]), "yes" if row["creator_alive"] else "no", side, state)


def _subscriber_lines(row: dict[str, Any]) -> list[str]:
    """A topic's subscribers as `ls` prints them under its row."""
    return ["  " + subscriber_text(sub) for sub in row.get("subscriber_list", ())]


def _user(uid: int) -> str:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _print_table(table: list[tuple[str, ...]],
                 notes: Optional[dict[int, list[str]]] = None) -> None:
    """Aligned columns; ``notes``: lines printed under a row, by its index."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for index, line in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
        for note in (notes or {}).get(index, ()):
            print(note)


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove this user's stale rings (and idle ones with --persistent)."""
    from ._sidefile import orphans, remove_group
    from .census import census, escape_name, remove, still_the_same
    doomed = {"stale", "idle"} if args.persistent else {"stale"}
    status = 0
    would = 0   # what --dry-run listed
    gone: set[str] = set()   # identities and names of the rings removed
    from .topic import Topic
    for row in census(open_topic=Topic.open):   # a stale topic goes as a stale ring does
        if row.get("uid") != os.geteuid() or not doomed & set(row["states"]):
            continue
        label = f"{escape_name(row['name'])} ({', '.join(row['states'])})"
        if row["kind"] == "sysv":
            label = f"sysv key {label}"
        if args.dry_run:
            print(f"would remove {label}")
            would += 1
            gone.update(filter(None, (row.get("identity"), row["name"])))
            continue
        if not still_the_same(row):
            continue   # removed, or made again, since we looked
        try:
            remove(row)
        except FileNotFoundError:
            continue
        except OSError as exc:
            _error(f"{label}: {_describe(exc)}")
            status = 1
            continue
        gone.update(filter(None, (row.get("identity"), row["name"])))
        print(f"removed {label}")
    # Then the Queue side files of rings gone for good: those just removed,
    # and those whose creator died with its watcher (never a live queue's:
    # ringshm/_sidefile.py, orphans).
    for group in orphans(gone=frozenset(gone)):
        label = (f"side files of queue {escape_name(group.key)} "
                 f"({group.files} files, {human_size(group.bytes)})")
        if args.dry_run:
            print(f"would remove {label}")
            would += 1
            continue
        remove_group(group)
        print(f"removed {label}")
    if args.dry_run and not would:
        print("nothing to remove: no " + ("stale or idle" if args.persistent else "stale")
              + " rings of this user, no orphaned side files")
    return status


def cmd_top(args: argparse.Namespace) -> int:
    """A live view of this user's rings: fill, rates, waits, recoveries."""
    if args.json and not args.once:
        raise ValueError("--json needs --once (one table after one interval)")
    if args.interval <= 0:
        raise ValueError("--interval must be more than 0 seconds")
    from .top import run
    return run(interval=args.interval, sort=args.sort, pattern=args.filter, once=args.once,
               as_json=args.json)


def _open_ring(args: argparse.Namespace) -> Ring:
    """The ring a command names: NAME, or --sysv-key KEY.

    Raises:
        ValueError: both or neither (exit status 2).
    """
    if (args.name is None) == (args.sysv_key is None):
        raise ValueError("give a ring NAME or --sysv-key KEY (one of them)")
    if args.sysv_key is not None:
        return _ring_cls().open(sysv_key=args.sysv_key)
    return _ring_cls().open(args.name)


def cmd_info(args: argparse.Namespace) -> int:
    """Print a ring's header and counters; a topic's, and its subscribers."""
    from .errors import RingWrongKind
    try:
        ring = _open_ring(args)
    except RingWrongKind:
        from .cli_topic import topic_info
        return topic_info(args)
    except RingCorrupted as exc:
        # A file that is not a ring (the message names no file): say which.
        label = (f"sysv key 0x{args.sysv_key:08x}" if args.sysv_key is not None
                 else _shown(args.name))
        _error(f"{label}: {_describe(exc)}")
        return 1
    with ring:
        from ._backing import companion_path, shm_path
        info: dict[str, object]
        if args.sysv_key is not None:
            info = {"sysv_key": f"0x{ring.sysv_key:08x}",
                    "lock_file": companion_path(args.sysv_key)}
        else:
            info = {"name": args.name, "path": shm_path(args.name)}
        info["max_message_size"] = ring.max_message_size
        info.update(ring.stats())
    print_info(info, args.json)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Remove rings by name: any regular file of that name (a corrupt
    segment too), never a directory or what a symbolic link points to;
    and System V rings by key (IPC_RMID, and the lock file)."""
    from ._backing import check_name, shm_path
    from .census import unescape_name
    if not args.names and not args.sysv_key:
        raise ValueError("give ring NAMEs or --sysv-key KEY to remove")
    status = 0
    for key in args.sysv_key:
        status |= _remove_sysv(key)
    for name in args.names:
        try:
            if args.escaped:
                # A planted name with control characters or bytes that are
                # not UTF-8: given as `ls` prints it.  Only the rules that
                # keep the path inside /dev/shm apply.
                name = unescape_name(name)
                check_name(name.translate(_CONTROL_TO_SPACE))
            else:
                check_name(name)
            path = shm_path(name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                raise RingCorrupted(f"{name!r} is not a ring ({_kind(mode)}); not removed")
            os.unlink(path)
        except FileNotFoundError:
            _error(f"no such ring: {_shown(name)}")
            status = 1
        except (RingError, OSError, ValueError) as exc:
            _error(f"{name!r}: {_describe(exc)}")
            status = 1
    return status


_CONTROL_TO_SPACE = {code: " " for code in [*range(0x20), 0x7F]}


def _remove_sysv(key: int) -> int:
    # Any segment of that key (a corrupt one too), as ipcrm -M would; the
    # kernel refuses another user's (EPERM).
    from ._backing import signed_key
    from ._ring import sysv_get, sysv_remove
    from .census import remove_companion
    label = f"sysv key 0x{key:08x}"
    try:
        sysv_remove(sysv_get(signed_key(key), 0, 0))
    except FileNotFoundError:
        _error(f"no System V segment has {label}")
        return 1
    except OSError as exc:
        _error(f"{label}: {_describe(exc)}")
        return 1
    remove_companion(key)
    return 0


def _kind(mode: int) -> str:
    return "a directory" if stat.S_ISDIR(mode) else "not a regular file"


def cmd_shutdown(args: argparse.Namespace) -> int:
    """Shut a ring (or topic) down: blocked senders and receivers wake, recv
    (sub) drains and ends."""
    from .errors import RingWrongKind
    try:
        segment: Any = _ring_cls().open(args.name)
    except RingWrongKind:
        from .topic import Topic
        segment = Topic.open(args.name)
    with segment:
        segment.shutdown()
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """stdin (or files) into a ring; blocks while the ring is full."""
    with _ring_cls().open(args.name) as ring:
        if args.file:
            for path in args.file:
                with open(path, "rb") as f:
                    ring.put(f.read())
        else:
            send_stream(ring, sys.stdin.buffer, b"\0" if args.null else b"\n")
        if args.shutdown:
            ring.shutdown()
    return 0


def cmd_recv(args: argparse.Namespace) -> int:
    """Messages to stdout, one per line, until shutdown, --count or --timeout.
    A message leaves the ring only once it was written and flushed: a full
    disk or a reader that went away loses nothing."""
    with _ring_cls().open(args.name) as ring:
        def take(write: Callable[[Buffer], None]) -> None:
            # view() consumes the message only when the block ends
            # normally; a write that raises leaves it in the ring.
            with ring.view(timeout=args.timeout) as message:
                write(message)
        return print_messages(take, args)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the pipeline demo (ringshm.demo)."""
    from .demo import run
    return run(messages=args.messages, workers=args.workers,
               compare_messages=0 if args.no_compare else args.compare_messages)


def cmd_bridge(args: argparse.Namespace) -> int:
    """Run a bridge (ringshm.bridge) until its ring is shut down."""
    try:
        from .bridge.command import run_bridge
    except ModuleNotFoundError as exc:
        if exc.name != "nats":
            raise
        _error("the bridges need nats-py: pip install 'ringshm[bridge]'")
        return 1
    return run_bridge(args)


def _add_bridge_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    bridge = sub.add_parser("bridge", help="a ring to NATS JetStream, or JetStream to a ring",
                            description="Bridge rings across machines through NATS JetStream: "
                                        "each message arrives once, in order, across crashes of "
                                        "the bridges and restarts of the server.")
    kinds = bridge.add_subparsers(dest="direction", metavar="DIRECTION")
    kinds.required = True
    out = kinds.add_parser("out", help="publish a ring's messages to JetStream")
    out.add_argument("ring", metavar="RING")
    out.add_argument("url", metavar="URL", help="nats://HOST:PORT (several: comma-separated)")
    inward = kinds.add_parser("in", help="put a JetStream subject's messages into a ring")
    inward.add_argument("url", metavar="URL", help="nats://HOST:PORT (several: comma-separated)")
    for p in (out, inward):
        p.add_argument("--subject", required=True, help="the NATS subject")
        p.add_argument("--stream", help="the JetStream stream (created when missing; "
                                        "default ringshm_SUBJECT)")
        p.add_argument("--creds", metavar="FILE", help="a NATS credentials file")
        p.add_argument("--tls-ca", metavar="PEM", help="CA certificates to trust")
        p.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
        p.add_argument("--tls-key", metavar="PEM", help="the client certificate's key")
        p.add_argument("--tls-hostname", metavar="NAME",
                       help="the name the server's certificate must have")
        p.add_argument("--wait", action="store_true",
                       help="wait for a server that is down at start (default: exit 1)")
        p.add_argument("--progress", action="store_true", help="show the rate and the backlog")
    inward.add_argument("ring", metavar="RING")
    out.add_argument("--window", type=parse_count, default=512, metavar="N",
                     help="messages in flight before their acknowledgements (default 512)")
    inward.add_argument("--durable", help="the durable consumer (default STREAM_in)")
    inward.add_argument("--batch", type=parse_count, default=256, metavar="N",
                        help="messages per fetch (default 256)")
    bridge.set_defaults(func=cmd_bridge)


def _delegate(module_name: str, argv: list[str]) -> int:
    """Run ``ringshm.<module_name>.main(argv)``, if that part is installed."""
    import importlib
    try:
        module = importlib.import_module(f"ringshm.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name not in (f"ringshm.{module_name}", "ringshm"):
            raise
        _error(f"'{module_name}' is not available in this installation "
               f"(module ringshm.{module_name} is missing)")
        return 1
    status: Optional[int] = module.main(argv)
    return 0 if status is None else status


# -- parser and main -----------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``ringshm`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Shared-memory ring buffers between processes: the ipcs/ipcrm of ringshm, "
                    "shell pipes through a ring, a demo, benchmarks and a stress test.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("create", help="create a persistent ring (stays until `ringshm rm`)")
    p.add_argument("name")
    p.add_argument("--capacity", type=parse_size, default=4 << 20,
                   help="bytes of data area, K/M/G suffixes, reserved in /dev/shm at once "
                        "(default 4M; see the README on sizing)")
    p.add_argument("--mode", type=parse_mode, default=0o600, help="octal permissions (default 600)")
    p.add_argument("--max-messages", type=parse_count, default=0, metavar="N",
                   help="also bound the number of messages (default: bytes only)")
    p.add_argument("--no-reserve", action="store_true",
                   help="a sparse segment: /dev/shm pages are taken when written, so a full "
                        "/dev/shm is a SIGBUS later instead of an error now")
    p.add_argument("--topic", action="store_true",
                   help="a topic (publish/subscribe: `ringshm pub`, `ringshm sub`), not a ring")
    p.add_argument("--history", type=parse_history, metavar="K",
                   help="(--topic) a new subscriber first receives up to the K most recent "
                        "messages still held (default 0)")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("ls", help="list every ring on this machine")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--all-users", action="store_true",
                   help="also list other users' System V rings (never read)")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("gc", help="remove this user's stale rings (a dead creator's, unmapped) "
                                  "and the Queue side files of rings gone for good")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed")
    p.add_argument("--persistent", action="store_true",
                   help="also remove idle persistent rings (no live process maps them)")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser("top", help="a live view of this user's rings: fill, rates, waits",
                       description="A live view of this user's rings and queues, refreshed "
                                   "every --interval seconds: capacity, fill, messages and "
                                   "bytes per second in and out, waits per second, lock "
                                   "recoveries, the bytes of a queue's side files, whether "
                                   "the creator lives, shutdown. Read-only: it takes no lock "
                                   "and writes nothing into a ring. q or Ctrl-C quits.")
    p.add_argument("--interval", type=parse_seconds, default=1.0, metavar="S",
                   help="seconds between refreshes; rates are measured over them (default 1)")
    p.add_argument("--sort", choices=TOP_SORT_KEYS, default="name",
                   help="order of the rows: name, kind, or the largest first "
                        "(rate: messages/s in+out; bytes: bytes/s in+out)")
    p.add_argument("--filter", metavar="PATTERN",
                   help="only the rings whose name contains PATTERN (a glob if it holds *?[)")
    p.add_argument("--once", action="store_true",
                   help="print one table after one interval and exit")
    p.add_argument("--json", action="store_true",
                   help="with --once: a JSON list, one object per ring")
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("info", help="a ring's header and counters")
    p.add_argument("name", nargs="?")
    p.add_argument("--sysv-key", type=parse_sysv_key, metavar="KEY",
                   help="the System V ring of this key (0x... or decimal) instead of NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("rm", help="remove rings (also corrupt ones)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--sysv-key", type=parse_sysv_key, action="append", default=[],
                   metavar="KEY", help="remove the System V ring of this key (IPC_RMID and "
                                       "its lock file); may be repeated")
    p.add_argument("--escaped", action="store_true",
                   help="NAMEs are as `ringshm ls` prints them (\\xNN for control characters "
                        "and bytes that are not UTF-8, \\\\ for a backslash)")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("shutdown", help="shut a ring or topic down: recv (sub) drains it and "
                                        "exits")
    p.add_argument("name")
    p.set_defaults(func=cmd_shutdown)

    p = sub.add_parser("send", help="stdin to a ring, one message per line",
                       description="Send stdin to a ring, one message per line (without the "
                                   "newline). Blocks while the ring is full. At end of input the "
                                   "ring stays open for other senders unless --shutdown is given.")
    p.add_argument("name")
    p.add_argument("--null", "-0", action="store_true", help="messages are NUL-separated")
    p.add_argument("--file", nargs="+", metavar="FILE", help="send each file as one message")
    p.add_argument("--shutdown", action="store_true",
                   help="shut the ring down at end of input, so receivers drain it and exit")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("recv", help="messages to stdout, one per line",
                       description="Print messages, one per line, until the ring is shut down "
                                   "and drained, --count messages arrived, or --timeout seconds "
                                   "passed without a message.")
    p.add_argument("name")
    p.add_argument("--count", "-n", type=parse_count, metavar="N", help="stop after N messages")
    p.add_argument("--timeout", type=parse_seconds, metavar="S",
                   help="stop after S seconds without a message (exit 1 if --count is unmet)")
    p.add_argument("--null", "-0", action="store_true", help="end each message with NUL")
    p.set_defaults(func=cmd_recv)

    p = sub.add_parser("demo", help="a producer/workers/collector pipeline with a progress bar")
    p.add_argument("--messages", type=parse_count, default=2_000_000, metavar="N",
                   help="jobs through the ringshm pipeline (default 2000000)")
    p.add_argument("--workers", type=parse_count, default=2, metavar="N",
                   help="worker processes (default 2)")
    p.add_argument("--compare-messages", type=parse_count, default=200_000, metavar="N",
                   help="jobs through the queue pipelines compared (default 200000)")
    p.add_argument("--no-compare", action="store_true",
                   help="skip the multiprocessing.Queue comparison")
    p.set_defaults(func=cmd_demo)

    from .cli_topic import add_parsers
    add_parsers(sub)
    _add_bridge_parser(sub)

    # bench and stress parse their own arguments; listed here for --help.
    sub.add_parser("bench", help="the benchmark suite: a table and a plot", add_help=False)
    sub.add_parser("stress", help="the stress and fault-injection run", add_help=False)
    return parser


@contextlib.contextmanager
def _filter_signals(pipe_kills: bool = True) -> Iterator[None]:
    """Like other filters: end quietly when the reader goes away (``| head``),
    and end at once with status 130 on Ctrl-C, even in the middle of a wait
    inside the core. Nothing needs cleaning up: these commands own no ring,
    and the others recover from a process that dies holding a ring's lock.
    `pipe_kills=False` (recv) keeps SIGPIPE ignored: the write then fails
    and the message stays in the ring instead of dying with the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signal.SIGPIPE: signal.signal(signal.SIGPIPE,
                                              signal.SIG_DFL if pipe_kills else signal.SIG_IGN),
                signal.SIGINT: signal.signal(signal.SIGINT,
                                             lambda signum, frame: os._exit(128 + signum))}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``ringshm`` command; returns the exit status.

    Raises:
        SystemExit: from argparse on bad usage (status 2) or --help (status 0).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    signals: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    command: Callable[[], int]
    if argv and argv[0] in ("bench", "stress"):
        topic = argv[0] == "stress" and "--topic" in argv   # ringshm/stress_topic.py
        command = functools.partial(_delegate, "stress_topic" if topic else argv[0], argv[1:])
    else:
        args = build_parser().parse_args(argv)
        command = functools.partial(args.func, args)
        # The demo removes its rings on Ctrl-C; the live top restores the
        # terminal (KeyboardInterrupt: 130).
        if args.func is not cmd_demo and not (args.func is cmd_top and not args.once):
            signals = _filter_signals(pipe_kills=args.command not in ("recv", "sub"))
    try:
        with signals:
            return command()
    except KeyboardInterrupt:
        return 130
    except RingError as exc:
        _error(_describe(exc))
        return 1
    except OSError as exc:
        _error(_describe(exc))
        return 1
    except ValueError as exc:
        # The core names the bad argument (a name with "/", a size too big).
        _error(_describe(exc))
        return 2

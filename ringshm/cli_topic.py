"""The ``ringshm`` command's topic commands (ringshm/cli.py registers them):
``pub`` (stdin lines or files published to a topic), ``sub`` (a subscriber
printing each message, as ``recv`` does), ``create --topic`` and ``info``
of a topic.  Topics are ringshm.topic's; these commands never take a
topic's lock to look at it (stats() and subscribers() read without one).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Optional

from ._cli_common import (
    PROG,
    _shown,
    parse_count,
    parse_seconds,
    print_info,
    print_messages,
    send_stream,
    subscriber_text,
)
from .census import escape_name, subscriber_row
from .errors import Lagged, RingWrongKind

if TYPE_CHECKING:
    from .topic import Topic

__all__ = ["add_parsers", "create_topic", "topic_info"]


def _open_topic(name: Optional[str], sysv_key: Optional[int] = None) -> Topic:
    """The topic a command names.

    Raises:
        RingWrongKind: it is a ring (the message says to use send/recv).
        RingNotFound, RingCorrupted, ...: as Topic.open().
    """
    from .topic import Topic
    try:
        if sysv_key is not None:
            return Topic.open(sysv_key=sysv_key)
        return Topic.open(name)
    except RingWrongKind:
        label = f"sysv key 0x{sysv_key:08x}" if sysv_key is not None else _shown(name or "")
        raise RingWrongKind(f"{label} is a ring, not a topic: use `ringshm send` and "
                            f"`ringshm recv` for a ring") from None


def create_topic(args: argparse.Namespace) -> int:
    """`ringshm create NAME --topic [--history K]`: a persistent topic."""
    from .topic import Topic
    if args.max_messages:
        raise ValueError("--max-messages is a ring's: a topic is bounded by bytes only")
    topic = Topic.create(args.name, capacity=args.capacity, mode=args.mode, persist=True,
                         history=args.history or 0, reserve=not args.no_reserve)
    made = topic.capacity
    topic.close()
    if made != args.capacity:
        print(f"created topic {args.name}: capacity {made} bytes, rounded up from "
              f"{args.capacity}")
    return 0


def topic_info(args: argparse.Namespace) -> int:
    """`ringshm info` of a topic: its counters, then one line per subscriber."""
    from ._backing import companion_path, shm_path
    topic = _open_topic(args.name, args.sysv_key)
    try:
        info: dict[str, Any]
        if args.sysv_key is not None:
            info = {"sysv_key": f"0x{args.sysv_key:08x}",
                    "lock_file": companion_path(args.sysv_key)}
        else:
            info = {"name": args.name, "path": shm_path(args.name)}
        info["kind"] = "topic"
        info["max_message_size"] = topic.max_message_size
        info.update(topic.stats())
        subscribers = [subscriber_row(sub) for sub in topic.subscribers()]
    finally:
        topic._detach_quietly()   # a look only: close() would wake its wait queues
    if args.json:
        print_info({**info, "subscriber_list": subscribers}, True)
        return 0
    if "name" in info:
        info["name"] = escape_name(info["name"])   # as `ls` prints it
    print_info(info, False)
    for sub in subscribers:
        print(subscriber_text(sub))
    return 0


class _Publisher:
    """A topic as send_stream's sink (put/put_many publish).  Its capacity
    is given as half the topic's: send_stream's batches, sized for a ring's
    8-byte records, stay under half the log with a topic's 16-byte ones."""

    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self.capacity = topic.capacity // 2
        self.max_message_size = topic.max_message_size
        self.name = topic.name

    def put(self, data: bytes) -> None:
        self.topic.publish(data)

    def put_many(self, messages: list[bytes]) -> None:
        self.topic.publish_many(messages)


def cmd_pub(args: argparse.Namespace) -> int:
    """stdin lines (or files) published to a topic; waits while a tethered
    subscriber holds the log full."""
    with _open_topic(args.name) as topic:
        if args.file:
            for path in args.file:
                with open(path, "rb") as f:
                    topic.publish(f.read())
        else:
            send_stream(_Publisher(topic), sys.stdin.buffer, b"\0" if args.null else b"\n")
        if args.shutdown:
            topic.shutdown()
    return 0


def cmd_sub(args: argparse.Namespace) -> int:
    """Subscribe, and print every message published from then on (after the
    topic's history), one per line, until shutdown, --count or --timeout.
    A Lagged (untethered, overrun) is a line on stderr; it goes on."""
    def lagged(exc: BaseException) -> bool:
        if not isinstance(exc, Lagged):
            return False
        print(f"{PROG}: lagged: {exc.missed} messages missed (an untethered "
              f"subscriber overrun); going on", file=sys.stderr, flush=True)
        return True

    with _open_topic(args.name) as topic:
        sub = topic.subscribe(tethered=not args.untethered, stall_timeout=args.stall_timeout)
        # A copy (not a view): an untethered subscriber's message written
        # over while copied is Lagged, never printed torn.
        return print_messages(lambda write: write(sub.get(timeout=args.timeout)), args,
                              skip=lagged)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register pub and sub with the ``ringshm`` parser."""
    p = sub.add_parser("pub", help="stdin to a topic, one message per line",
                       description="Publish stdin to a topic, one message per line (without "
                                   "the newline). Waits while a tethered subscriber holds the "
                                   "log full. At end of input the topic stays open for other "
                                   "publishers unless --shutdown is given.")
    p.add_argument("name")
    p.add_argument("--null", "-0", action="store_true", help="messages are NUL-separated")
    p.add_argument("--file", nargs="+", metavar="FILE", help="publish each file as one message")
    p.add_argument("--shutdown", action="store_true",
                   help="shut the topic down at end of input, so subscribers drain it and exit")
    p.set_defaults(func=cmd_pub)

    p = sub.add_parser("sub", help="subscribe to a topic: messages to stdout, one per line",
                       description="Subscribe to a topic and print every message published "
                                   "from then on (first the topic's history, set when it was "
                                   "created), one per line, until the topic is shut down and "
                                   "drained, --count messages arrived, or --timeout seconds "
                                   "passed without a message. An untethered subscriber that "
                                   "was overrun says on stderr how many it missed, and goes "
                                   "on.")
    p.add_argument("name")
    p.add_argument("--count", "-n", type=parse_count, metavar="N", help="stop after N messages")
    p.add_argument("--timeout", type=parse_seconds, metavar="S",
                   help="stop after S seconds without a message (exit 1 if --count is unmet)")
    p.add_argument("--null", "-0", action="store_true", help="end each message with NUL")
    link = p.add_mutually_exclusive_group()
    link.add_argument("--untethered", action="store_true",
                      help="never slow publishers: when overrun, say how many were missed "
                           "and go on")
    link.add_argument("--stall-timeout", type=parse_seconds, metavar="S",
                      help="tethered, until this subscriber takes nothing for S seconds "
                           "while a publisher waits on it")
    p.set_defaults(func=cmd_sub)

"""The ``ringshm`` command's topics (ringshm/cli_topic.py), run as a user
would: ``create --topic``, ``pub``, ``sub`` (tethered, untethered and
overrun, a ring named by mistake), ``ls`` and ``info`` with a topic's
subscribers, ``top`` and ``shutdown`` of a topic.  Each test makes its own
topics under unique names and removes them."""

import json
import subprocess
import sys
import time

import pytest
from conftest import remove_segment, unique_ring_name
from test_cli import RUN_TIMEOUT, assert_error, ringshm, stop

from ringshm import Ring, Topic

SLOW = 30.0   # bound on what a busy machine may take


@pytest.fixture
def name():
    topic_name = unique_ring_name()
    yield topic_name
    remove_segment(topic_name)


def make_topic(name, *options):
    result = ringshm("create", name, "--topic", *options)
    assert result.returncode == 0, result.stderr
    return name


def start_sub(name, *options, stdout=subprocess.PIPE):
    return subprocess.Popen([sys.executable, "-m", "ringshm", "sub", name, *options],
                            stdout=stdout, stderr=subprocess.PIPE)


def wait_for_subscribers(name, count):
    """Until the topic has ``count`` subscribers (a sub has subscribed)."""
    topic = Topic.open(name)
    try:
        deadline = time.monotonic() + SLOW
        while len(topic.subscribers()) < count:
            assert time.monotonic() < deadline, "the subscriber never subscribed"
            time.sleep(0.01)
    finally:
        topic.close()


def test_create_topic_pub_sub_history_and_shutdown(name):
    make_topic(name, "--history", "2", "--capacity", "64K")
    with Topic.open(name) as topic:
        assert topic.history == 2 and topic.capacity == 65536
    assert ringshm("pub", name, stdin=b"old\nrecent1\nrecent2\n").returncode == 0
    first, second = start_sub(name), start_sub(name, "--stall-timeout", "600")
    try:
        wait_for_subscribers(name, 2)
        lines = b"".join(b"%d\n" % i for i in range(5000))
        assert ringshm("pub", name, "--shutdown", stdin=lines).returncode == 0
        for sub in (first, second):
            out, err = sub.communicate(timeout=RUN_TIMEOUT)
            # The history (the two most recent), then every line, in order.
            assert (sub.returncode, err) == (0, b"")
            assert out == b"recent1\nrecent2\n" + lines
    finally:
        stop(first)
        stop(second)
    assert_error(ringshm("pub", name, stdin=b"late\n"), 1, "shut")


def test_pub_files_and_null_and_sub_count_and_timeout(name, tmp_path):
    make_topic(name)
    sub = start_sub(name, "--count", "3", "--null")
    try:
        wait_for_subscribers(name, 1)
        (tmp_path / "a").write_bytes(b"one\nfile")
        assert ringshm("pub", name, "--file", tmp_path / "a").returncode == 0
        assert ringshm("pub", name, "--null", stdin=b"x\0y\0z").returncode == 0
        out, err = sub.communicate(timeout=RUN_TIMEOUT)
        assert (sub.returncode, out, err) == (0, b"one\nfile\0x\0y\0", b"")
    finally:
        stop(sub)
    result = ringshm("sub", name, "--count", "2", "--timeout", "0.2")
    assert_error(result, 1, "timed out after 0 of 2")
    assert ringshm("sub", name, "--timeout", "0.1").returncode == 0


def test_an_overrun_untethered_sub_says_how_many_it_missed_and_goes_on(name):
    make_topic(name, "--capacity", "4K")
    # Its stdout is a pipe nobody reads yet: once the pipe is full it stops
    # taking, and the publisher (not waiting for it) overruns it.
    sub = start_sub(name, "--untethered")
    try:
        wait_for_subscribers(name, 1)
        total = 40000
        lines = b"".join(b"%05d\n" % i for i in range(total))
        assert ringshm("pub", name, "--shutdown", stdin=lines).returncode == 0
        out, err = sub.communicate(timeout=RUN_TIMEOUT)
        assert sub.returncode == 0, err
        got = [int(line) for line in out.splitlines()]
        assert got == sorted(set(got)) and len(got) < total   # in order, none twice
        notes = err.decode().splitlines()
        assert notes and all(line.startswith("ringshm: lagged: ") for line in notes)
        missed = sum(int(line.split("lagged: ")[1].split()[0]) for line in notes)
        # Every message was printed or counted missed, never both.
        assert len(got) + missed == total
        assert "Traceback" not in err.decode()
    finally:
        stop(sub)


def test_sub_and_pub_of_a_ring_say_it_is_a_ring(name):
    Ring.create(name, capacity=4096, persist=True).close()
    for command in ("sub", "pub"):
        assert_error(ringshm(command, name, stdin=b"x\n"), 1, "is a ring, not a topic",
                     "ringshm send")
    assert_error(ringshm("sub", unique_ring_name()), 1)


def test_recv_of_a_topic_says_it_is_a_topic(name):
    make_topic(name)
    assert_error(ringshm("recv", name, "--timeout", "0"), 1, "topic")


def test_ls_shows_a_topic_and_each_subscriber(name):
    make_topic(name, "--capacity", "8K")
    with Topic.open(name) as topic:
        tethered = topic.subscribe()
        untethered = topic.subscribe(tethered=False)
        for i in range(3):
            topic.publish(b"m%d" % i)
        assert tethered.get() == b"m0"
        result = ringshm("ls")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        index = next(i for i, line in enumerate(lines) if line.startswith(name + " "))
        row = lines[index].split()
        assert row[1:4] == ["8K", "96", "3"]   # capacity, used, published
        assert "topic" in lines[index] and "(2 subscribers)" in lines[index]
        subs = lines[index + 1:index + 3]
        assert all(line.startswith("  subscriber ") for line in subs)
        assert "tethered, lag 2 messages" in subs[0] and "received 1, missed 0" in subs[0]
        assert "untethered, lag 3 messages" in subs[1] and "received 0" in subs[1]
        result = ringshm("ls", "--json")
        entry, = [r for r in json.loads(result.stdout) if r["name"] == name]
        assert entry["segment"] == "topic" and entry["state"] == "topic"
        assert (entry["published"], entry["subscribers"]) == (3, 2)
        first, second = entry["subscriber_list"]
        assert (first["link"], first["lag_messages"], first["received"]) == ("tethered", 2, 1)
        assert (second["link"], second["lag_messages"]) == ("untethered", 3)
        assert first["alive"] and first["pid"] == second["pid"]
        untethered.close()
        tethered.close()


def test_info_of_a_topic_prints_its_stats_and_subscribers(name):
    make_topic(name, "--history", "4")
    with Topic.open(name) as topic:
        sub = topic.subscribe()
        topic.publish(b"x")
        result = ringshm("info", name)
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode()
        assert any(line.split() == ["kind", "topic"] for line in out.splitlines())
        assert any(line.split() == ["history", "4"] for line in out.splitlines())
        assert "subscriber 0: pid" in out and "lag 1 messages" in out
        info = json.loads(ringshm("info", name, "--json").stdout)
        assert info["kind"] == "topic" and info["published"] == 1
        assert info["subscriber_list"][0]["lag_messages"] == 1
        sub.close()


def test_top_shows_a_topic_with_its_publish_rate(name):
    make_topic(name)
    with Topic.open(name) as topic:
        sub = topic.subscribe()
        publisher = subprocess.Popen(
            [sys.executable, "-c", f"""
import time
from ringshm import Topic
with Topic.open({name!r}) as t:
    for i in range(400):
        t.publish(b"x")
        time.sleep(0.005)
"""])
        try:
            result = ringshm("top", "--once", "--json", "--filter", name, "--interval", "0.5")
            assert result.returncode == 0, result.stderr
            row, = json.loads(result.stdout)
            assert (row["kind"], row["state"]) == ("topic", "ok")
            assert row["messages_in_per_s"] > 0
        finally:
            stop(publisher)
            sub.close()


def test_shutdown_command_ends_a_waiting_sub(name):
    make_topic(name)
    sub = start_sub(name)
    try:
        wait_for_subscribers(name, 1)
        assert ringshm("shutdown", name).returncode == 0
        assert sub.wait(RUN_TIMEOUT) == 0
    finally:
        stop(sub)


@pytest.mark.parametrize("args", [["--history", "2"], ["--topic", "--max-messages", "4"],
                                  ["--topic", "--history", "-1"]])
def test_create_topic_bad_usage(name, args):
    result = ringshm("create", name, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr.decode()


def test_sub_untethered_and_stall_timeout_exclude_each_other(name):
    result = ringshm("sub", name, "--untethered", "--stall-timeout", "1")
    assert result.returncode == 2

"""Topics across processes and threads: publishers and subscribers in
processes of their own (spawned ones receive the Topic by pickle), 65
subscribers across processes, threads sharing one Subscription, Ctrl-C in
a blocked get.  No timing assertion but generous bounds on waits."""

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

from conftest import child_env, default_sigint, join_or_kill, ringshm_home, unique_ring_name

from ringshm import Empty, ShutDown, Topic


def stamp(publisher, n):
    return publisher.to_bytes(1, "little") + n.to_bytes(4, "little") + b"." * (n % 50)


def unstamp(message):
    return message[0], int.from_bytes(message[1:5], "little")


def publisher(topic, index, count, batch):
    """Publish `count` stamped messages, in batches of `batch` now and then."""
    n = 0
    while n < count:
        if batch and n % 7 == 0:
            k = min(batch, count - n)
            topic.publish_many([stamp(index, n + i) for i in range(k)], timeout=60)
            n += k
        else:
            topic.publish(stamp(index, n), timeout=60)
            n += 1
    topic.close()


def counting_subscriber(topic, subscriptions, ready, results):
    """Subscribe `subscriptions` times, say so, then take everything until
    the shutdown; report per subscription: (its counts by publisher, the
    first fault found or None)."""
    subs = [topic.subscribe() for _ in range(subscriptions)]
    ready.release()
    report = [[{}, None] for _ in subs]
    live = list(range(len(subs)))
    while live:
        for i in list(live):
            try:
                batch = subs[i].get_many(timeout=0.05)
            except ShutDown:
                live.remove(i)
                continue
            except Empty:   # the next subscription
                continue
            seen, _ = report[i]
            for message in batch:
                who, n = unstamp(message)
                expected = seen.get(who, 0)
                if n != expected or message != stamp(who, n):
                    report[i][1] = report[i][1] or f"publisher {who}: {n} where {expected} was due"
                seen[who] = max(expected, n + 1)
    results.put((os.getpid(), report))
    for sub in subs:
        sub.close()
    topic.close()


def run_fan_out(publishers, count, subscriber_processes, subscriptions_each, batch,
                context="fork"):
    topic = Topic.create(unique_ring_name(), 1 << 16)
    ctx = multiprocessing.get_context(context)
    fork = multiprocessing.get_context("fork")
    ready = ctx.Semaphore(0)
    results = ctx.Queue()
    subscribers = [ctx.Process(target=counting_subscriber,
                               args=(topic, subscriptions_each, ready, results))
                   for _ in range(subscriber_processes)]
    pubs = [fork.Process(target=publisher, args=(topic, i, count, batch))
            for i in range(publishers)]
    try:
        for p in subscribers:
            p.start()
        for _ in subscribers:
            assert ready.acquire(timeout=60), "a subscriber process did not start"
        assert topic.stats()["subscribers"] == subscriber_processes * subscriptions_each
        for p in pubs:
            p.start()
        for p in pubs:
            assert join_or_kill(p, timeout=120) and p.exitcode == 0
        topic.shutdown()
        reports = [results.get(timeout=120) for _ in subscribers]
        for p in subscribers:
            assert join_or_kill(p, timeout=60) and p.exitcode == 0
    finally:
        for p in pubs + subscribers:
            join_or_kill(p, timeout=0)
        topic.close()
    expected = {i: count for i in range(publishers)}
    for pid, report in reports:
        for seen, fault in report:
            assert fault is None, f"subscriber in {pid}: {fault}"
            assert seen == expected, f"subscriber in {pid} received {seen}, not {expected}"
    return reports


def test_two_publisher_processes_four_tethered_subscriber_processes():
    """Every subscriber receives every message of both publishers, each
    publisher's in its order, none twice; the log (64 KiB) laps many times,
    so publishers wait for the slowest subscriber."""
    reports = run_fan_out(publishers=2, count=20_000, subscriber_processes=4,
                          subscriptions_each=1, batch=5)
    assert len(reports) == 4


def test_spawned_subscribers_receive_the_topic_by_pickle():
    run_fan_out(publishers=2, count=2000, subscriber_processes=2, subscriptions_each=1,
                batch=0, context="spawn")


def test_sixty_five_subscribers_across_processes():
    run_fan_out(publishers=1, count=3000, subscriber_processes=5, subscriptions_each=13,
                batch=3)


def test_threads_sharing_one_subscription_take_each_message_once():
    topic = Topic.create(unique_ring_name(), 1 << 14)
    try:
        sub = topic.subscribe()
        taken = [[] for _ in range(4)]

        def take(mine):
            for message in sub:
                mine.append(unstamp(message)[1])

        threads = [threading.Thread(target=take, args=(mine,)) for mine in taken]
        for thread in threads:
            thread.start()
        count = 20_000
        for n in range(count):
            topic.publish(stamp(0, n), timeout=60)
        topic.shutdown()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        everything = sorted(n for mine in taken for n in mine)
        assert everything == list(range(count))   # none lost, none twice
        for mine in taken:
            assert mine == sorted(mine)   # each thread's in the log's order
    finally:
        topic.close()


def test_threads_publishing_and_one_view_at_a_time():
    topic = Topic.create(unique_ring_name(), 1 << 14)
    try:
        sub = topic.subscribe()
        got = []

        def view_all():
            while True:
                try:
                    with sub.view(timeout=30) as view:
                        got.append(bytes(view))
                except ShutDown:
                    return

        readers = [threading.Thread(target=view_all) for _ in range(2)]
        writers = [threading.Thread(target=lambda i=i: [
            topic.publish(stamp(i, n), timeout=60) for n in range(3000)]) for i in range(3)]
        for thread in readers + writers:
            thread.start()
        for thread in writers:
            thread.join(120)
        topic.shutdown()
        for thread in readers:
            thread.join(60)
        assert not any(thread.is_alive() for thread in readers + writers)
        by_publisher = {}
        for message in got:
            who, n = unstamp(message)
            by_publisher.setdefault(who, []).append(n)
        assert {who: sorted(ns) for who, ns in by_publisher.items()} == {
            i: list(range(3000)) for i in range(3)}
    finally:
        topic.close()


CTRL_C_PEER = r"""
import sys, time
from ringshm import Topic
topic = Topic.open(sys.argv[1])
sub = topic.subscribe()
print("ready", flush=True)
try:
    sub.get()
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
"""


def test_ctrl_c_interrupts_a_blocked_get():
    topic = Topic.create(unique_ring_name(), 4096)
    child = subprocess.Popen([sys.executable, "-c", CTRL_C_PEER, topic.name],
                             cwd=ringshm_home(), env=child_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        assert child.stdout.readline() == "ready\n"
        time.sleep(0.3)
        assert child.poll() is None, "the blocked get returned by itself"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        topic.close()
    assert child.returncode == 0, err
    assert out == "KeyboardInterrupt\n"

"""The bridges against a real nats-server (bridgekit.py starts one on a free
loopback port): reconciling with what the stream already holds, hostile
message ids, the server's order check, the in bridge's tag and gaps,
backpressure, outages and the command's errors (issue 11)."""

import asyncio
import shutil
import subprocess
import sys
import threading
import time

import nats
import pytest
from bridgekit import Bridge, NatsServer, free_port, nats_server, require_nats_server  # noqa: F401
from faultkit import RawHeader
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import APIError

from ringshm.bridge import BridgeError, in_, out, run_in, run_out
from ringshm.bridge.ids import default_stream, msg_id, parse_msg_id

pytestmark = [pytest.mark.multiprocess]

SUBJECT = "jobs.test"
STREAM = default_stream(SUBJECT)


async def _with_js(url, work):
    client = await nats.connect(url)
    try:
        return await work(client.jetstream())
    finally:
        await client.close()


def with_js(url, work):
    """Run `work(js)` (a coroutine function) on a connection of its own."""
    return asyncio.run(_with_js(url, work))


def make_stream(url, duplicate_window=120.0, **config):
    async def work(js):
        await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT],
                                         duplicate_window=duplicate_window, **config))
    with_js(url, work)


def six_in_a_stream(url, **config):
    """The stream (made with `config`), holding s1..s6 at sequences 1..6
    (what it keeps of them)."""
    make_stream(url, **config)
    publish(url, [(b"s%d" % seq, None) for seq in range(1, 7)])


def publish(url, messages):
    """Publish (payload, headers) pairs; the acks."""
    async def work(js):
        return [await js.publish(SUBJECT, payload, headers=headers)
                for payload, headers in messages]
    return with_js(url, work)


def stored(url):
    """(payload, Nats-Msg-Id) of every message of the stream, in order."""
    async def work(js):
        info = await js.stream_info(STREAM)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(STREAM, seq)
            out.append((msg.data, (msg.headers or {}).get("Nats-Msg-Id")))
        return out
    return with_js(url, work)


def filled(make_ring, count, capacity=1 << 16):
    ring = make_ring(capacity=capacity)
    for i in range(count):
        ring.put(b"m%d" % i)
    return ring


# -- ids ---------------------------------------------------------------------------

def test_message_ids_round_trip_and_refuse_garbage():
    ident = "0123456789abcdef" * 2
    assert parse_msg_id(msg_id(ident, 0)) == (ident, 0)
    assert parse_msg_id(msg_id(ident, (1 << 64) - 1)) == (ident, (1 << 64) - 1)
    for bad in (None, "", "ringshm:zz:1", f"ringshm:{ident}:", f"ringshm:{ident}:01",
                f"ringshm:{ident}:{1 << 64}", f"ringshm:{ident.upper()}:1",
                f"ringshm:{ident}:1 ", f"other:{ident}:1", "ringshm:" + "0" * 31 + ":1"):
        assert parse_msg_id(bad) is None, bad


# -- the out bridge ------------------------------------------------------------------

def test_out_resumes_after_what_the_stream_holds_beyond_the_duplicate_window(
        make_ring, nats_server):  # noqa: F811
    # A bridge was killed after JetStream stored messages 0..4 but before it
    # consumed them; the duplicate window has passed since.
    make_stream(nats_server.url, duplicate_window=0.5)
    ring = filled(make_ring, 10)
    publish(nats_server.url, [(b"m%d" % i, {"Nats-Msg-Id": msg_id(ring.identity, i)})
                              for i in range(5)])
    time.sleep(1.0)
    ring.shutdown()
    run_out(ring, nats_server.url, SUBJECT)
    assert stored(nats_server.url) == [(b"m%d" % i, msg_id(ring.identity, i)) for i in range(10)]
    stats = ring.stats()
    assert len(ring) == 0 and stats["bridge_sent"] == 5 and stats["bridge_acked"] == 10


@pytest.mark.parametrize("last_id", [None, "garbage", "ringshm:" + "ab" * 16 + ":3",
                                     "ringshm:" + "ab" * 16 + ":" + "9" * 30])
def test_out_ignores_a_last_message_that_is_not_this_rings(make_ring, nats_server, last_id):  # noqa: F811,E501
    make_stream(nats_server.url)
    publish(nats_server.url, [(b"other", {"Nats-Msg-Id": last_id} if last_id else None)])
    ring = filled(make_ring, 6)
    ring.shutdown()
    run_out(ring, nats_server.url, SUBJECT)
    got = stored(nats_server.url)
    assert [payload for payload, _ in got] == [b"other"] + [b"m%d" % i for i in range(6)]


def test_out_refuses_a_stream_that_names_a_message_the_ring_never_had(make_ring, nats_server):  # noqa: F811,E501
    make_stream(nats_server.url)
    ring = filled(make_ring, 3)
    publish(nats_server.url, [(b"forged", {"Nats-Msg-Id": msg_id(ring.identity, 1000)})])
    ring.shutdown()
    with pytest.raises(BridgeError, match="message 1000 of this ring"):
        run_out(ring, nats_server.url, SUBJECT)
    assert len(ring) == 3   # nothing consumed


def test_the_server_refuses_a_message_out_of_order(nats_server):  # noqa: F811
    # The order guarantee rests on this check of nats-server: message k+1,
    # sent expecting k's sequence, is refused when k is missing, and a
    # message sent again after it was stored is never stored twice.
    make_stream(nats_server.url)
    first = publish(nats_server.url, [(b"k-1", {"Nats-Msg-Id": "a"})])[0]
    with pytest.raises(APIError) as refused:
        publish(nats_server.url, [(b"k+1", {"Nats-Msg-Id": "c",
                                            "Nats-Expected-Last-Sequence": str(first.seq + 1)})])
    assert refused.value.err_code == 10071   # wrong last sequence
    publish(nats_server.url, [(b"k", {"Nats-Msg-Id": "b",
                                      "Nats-Expected-Last-Sequence": str(first.seq)})])
    try:
        publish(nats_server.url, [(b"k", {"Nats-Msg-Id": "b",
                                          "Nats-Expected-Last-Sequence": str(first.seq)})])
    except APIError as exc:
        assert exc.err_code == 10071
    assert [payload for payload, _ in stored(nats_server.url)] == [b"k-1", b"k"]


def test_out_goes_on_after_another_publisher_slipped_in(make_ring, nats_server):  # noqa: F811
    make_stream(nats_server.url)
    ring = make_ring(capacity=1 << 16)
    thread = threading.Thread(target=run_out, args=(ring, nats_server.url, SUBJECT))
    thread.start()
    try:
        ring.put_many([b"a%d" % i for i in range(50)])
        publish(nats_server.url, [(b"intruder", None)])
        ring.put_many([b"b%d" % i for i in range(50)])
    finally:
        ring.shutdown()
        thread.join(30)
    assert not thread.is_alive()
    mine = [payload for payload, _ in stored(nats_server.url) if payload != b"intruder"]
    assert mine == [b"a%d" % i for i in range(50)] + [b"b%d" % i for i in range(50)]


def test_an_intruder_between_reconcile_and_the_first_publish_costs_nothing(
        make_ring, nats_server, monkeypatch):  # noqa: F811
    # Another publisher stores one message after the out bridge reconciled
    # and before its first message: that message is refused (the sequence
    # moved), and the next one, which expects the sequence the first would
    # have had, must be refused too, or reconcile takes the first for stored.
    make_stream(nats_server.url)
    ring = filled(make_ring, 5)
    ring.shutdown()
    reconcile = out._OutBridge._reconcile
    intruded = []

    async def reconcile_then_intrude(self, js):
        last = await reconcile(self, js)
        if not intruded:
            intruded.append((await js.publish(SUBJECT, b"intruder")).seq)
        return last

    monkeypatch.setattr(out._OutBridge, "_reconcile", reconcile_then_intrude)
    run_out(ring, nats_server.url, SUBJECT)
    assert intruded
    assert [payload for payload, _ in stored(nats_server.url)] == \
        [b"intruder"] + [b"m%d" % i for i in range(5)]
    assert len(ring) == 0


def test_out_waits_for_a_server_that_is_down_and_says_so_once(make_ring, tmp_path):
    require_nats_server()
    server = NatsServer(tmp_path / "js")
    ring = filled(make_ring, 20)
    out = Bridge(["out", ring.name, server.url, "--subject", SUBJECT, "--wait"],
                 tmp_path / "out.log").start()
    try:
        time.sleep(2.0)
        assert out.alive() and len(ring) == 20
        server.start()
        deadline = time.monotonic() + 30
        while len(ring) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(ring) == 0
        ring.shutdown()
        assert out.wait(30) == 0
        log = out.log()
        assert log.count("unreachable") == 1, log
        assert "connected to NATS at" in log, log
        assert [payload for payload, _ in stored(server.url)] == [b"m%d" % i for i in range(20)]
    finally:
        out.kill()
        server.kill()


# -- the in bridge ----------------------------------------------------------------------

def leave_durable_consumer(url, deliver_policy):
    """The in bridge's durable consumer, as an earlier run would have left
    it, delivering by `deliver_policy`."""
    async def work(js):
        await js.add_consumer(STREAM, ConsumerConfig(
            durable_name=STREAM + "_in", filter_subject=SUBJECT,
            deliver_policy=deliver_policy))
    with_js(url, work)


def run_in_until(ring, url, count, timeout=30, **kwargs):
    """Run the in bridge in a thread until `ring` holds `count` messages;
    then shut the ring down: (its messages, its tag just before)."""
    errors = []

    def target():
        try:
            run_in(url, SUBJECT, ring, **kwargs)
        except BaseException as exc:   # reported below
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + timeout
    while len(ring) < count and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    tag = ring._last_tag()
    ring.shutdown()
    thread.join(30)
    assert not errors, errors
    return ring.get_many(max_messages=10_000), tag


def test_in_skips_what_the_rings_tag_says_it_has(make_ring, nats_server):  # noqa: F811
    six_in_a_stream(nats_server.url)
    ring = make_ring(capacity=1 << 16)
    ring.put_many([b"had 1..3"], tag=3)   # a bridge put 1..3 and died before its acks
    got, tag = run_in_until(ring, nats_server.url, 4)
    assert got == [b"had 1..3", b"s4", b"s5", b"s6"] and tag == 6


def test_in_never_puts_twice_what_a_consumer_taken_for_fresh_delivers_again(
        make_ring, nats_server, monkeypatch):  # noqa: F811
    # A server recovering after a crash may not show a durable consumer it
    # has: the bridge takes the one it then finds for fresh, and that one
    # delivers from its own ack floor, below the ring's tag.  (Seen as 24
    # duplicates in the 100,000-message soak.)
    six_in_a_stream(nats_server.url)

    leave_durable_consumer(nats_server.url, DeliverPolicy.ALL)

    async def taken_for_fresh(self, js, last, recreate):
        return True
    monkeypatch.setattr(in_._InBridge, "_consumer", taken_for_fresh)
    ring = make_ring(capacity=1 << 16)
    ring.put_many([b"had 1..3"], tag=3)
    got, tag = run_in_until(ring, nats_server.url, 4)
    assert got == [b"had 1..3", b"s4", b"s5", b"s6"] and tag == 6


def test_in_loses_nothing_when_a_consumer_taken_for_fresh_skips_ahead(
        make_ring, nats_server, monkeypatch):  # noqa: F811
    # The same recovering server, and the durable it has delivers newer
    # messages first (the ones it handed to the killed bridge come again only
    # after ack_wait): its first delivery is not the next message.  Seen once
    # as 20 messages lost in the kill test.
    six_in_a_stream(nats_server.url)
    leave_durable_consumer(nats_server.url, DeliverPolicy.LAST)   # delivers 6 first
    real_consumer = in_._InBridge._consumer
    calls = []

    async def first_taken_for_fresh(self, js, last, recreate):
        calls.append(recreate)
        if len(calls) == 1:
            return True
        return await real_consumer(self, js, last, recreate)
    monkeypatch.setattr(in_._InBridge, "_consumer", first_taken_for_fresh)
    ring = make_ring(capacity=1 << 16)
    ring.put_many([b"had 1..2"], tag=2)
    got, tag = run_in_until(ring, nats_server.url, 5, timeout=15)
    assert got == [b"had 1..2", b"s3", b"s4", b"s5", b"s6"] and tag == 6
    assert calls == [False, True]   # made again from 3 at the gap


def test_in_skips_ahead_only_past_what_the_streams_limits_dropped(
        make_ring, nats_server):  # noqa: F811
    # A stream that keeps 3 messages holds 4..6 of 1..6: a fresh consumer
    # starting after the tag (1) delivers 4 first, and nothing else is left.
    six_in_a_stream(nats_server.url, max_msgs=3)
    ring = make_ring(capacity=1 << 16)
    ring.put_many([b"had 1"], tag=1)
    got, tag = run_in_until(ring, nats_server.url, 4, timeout=15)
    assert got == [b"had 1", b"s4", b"s5", b"s6"] and tag == 6


def test_in_refuses_a_stream_that_ends_below_the_rings_tag(make_ring, nats_server):  # noqa: F811
    make_stream(nats_server.url)
    publish(nats_server.url, [(b"s%d" % seq, None) for seq in range(1, 3)])
    ring = make_ring(capacity=1 << 16)
    ring.put_many([b"from an older stream"], tag=40)
    with pytest.raises(BridgeError, match="made again"):
        run_in(nats_server.url, SUBJECT, ring)
    assert len(ring) == 1


def test_in_makes_the_consumer_again_at_a_gap(make_ring, nats_server):  # noqa: F811
    six_in_a_stream(nats_server.url)

    # A durable consumer left at the last message: it would deliver 6 first.
    leave_durable_consumer(nats_server.url, DeliverPolicy.LAST)
    ring = make_ring(capacity=1 << 16)
    ring.put_many([b"had 1..2"], tag=2)
    got, tag = run_in_until(ring, nats_server.url, 5)
    assert got == [b"had 1..2", b"s3", b"s4", b"s5", b"s6"] and tag == 6


def test_a_full_ring_slows_in_without_redelivery(make_ring, nats_server, monkeypatch):  # noqa: F811,E501
    # A consumer that reads slowly holds the in bridge in put() for longer
    # than the consumer's ack_wait: in-progress reports keep JetStream from
    # delivering the waiting batch again.
    monkeypatch.setattr(in_, "ACK_WAIT", 1.0)
    monkeypatch.setattr(in_, "PROGRESS_EVERY", 0.25)
    make_stream(nats_server.url)
    payloads = [bytes([i]) * 400 for i in range(100)]
    publish(nats_server.url, [(p, None) for p in payloads])
    ring = make_ring(capacity=4096)
    thread = threading.Thread(target=run_in, args=(nats_server.url, SUBJECT, ring))
    thread.start()
    got = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < len(payloads) and time.monotonic() < deadline:
            got.extend(ring.get_many(max_messages=1, timeout=5))
            time.sleep(0.03)   # about 3 s in all: the ack_wait three times over
    finally:
        ring.shutdown()
        thread.join(30)
    assert got == payloads
    assert ring.stats()["bridge_redelivered"] == 0


# -- the command ------------------------------------------------------------------------

def ringshm(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "ringshm", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_command_reports_a_server_that_is_down(make_ring):
    ring = make_ring()
    for argv in (["out", ring.name], ["in"]):
        url = f"nats://127.0.0.1:{free_port()}"
        args = [*argv, url, "--subject", SUBJECT] + ([ring.name] if argv == ["in"] else [])
        done = ringshm("bridge", *args)
        assert done.returncode == 1, done
        assert "cannot connect to NATS at" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("url", ["nats://127.0.0.1:notaport", "http://[::1", "nats://"])
def test_command_reports_a_bad_url(make_ring, url):
    ring = make_ring()
    done = ringshm("bridge", "out", ring.name, url, "--subject", SUBJECT)
    assert done.returncode == 1, done
    assert done.stderr.startswith("ringshm: error:") and "Traceback" not in done.stderr, done


def test_command_usage_errors(make_ring):
    ring = make_ring()
    done = ringshm("bridge", "out", ring.name, "nats://127.0.0.1:1")
    assert done.returncode == 2 and "--subject" in done.stderr
    done = ringshm("bridge", "in", "nats://127.0.0.1:1", "--subject", SUBJECT, "no-such-ring-x")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done


def test_command_bridges_and_info_shows_the_counters(make_ring, nats_server, tmp_path):  # noqa: F811,E501
    a, b = make_ring(capacity=1 << 16), make_ring(capacity=1 << 16)
    out = Bridge(["out", a.name, nats_server.url, "--subject", SUBJECT, "--progress"],
                 tmp_path / "out.log").start()
    inward = Bridge(["in", nats_server.url, "--subject", SUBJECT, b.name],
                    tmp_path / "in.log").start()
    try:
        a.put_many([b"x%d" % i for i in range(100)])
        got = []
        while len(got) < 100:
            got.extend(b.get_many(timeout=20))
        assert got == [b"x%d" % i for i in range(100)]
        a.shutdown()
        assert out.wait(30) == 0, out.log()
        b.shutdown()
        assert inward.wait(30) == 0, inward.log()
        info = ringshm("info", a.name).stdout
        assert "bridge_sent" in info and "bridge_acked" in info
        assert ringshm("info", b.name, "--json").returncode == 0
        assert a.stats()["bridge_acked"] == 100 and b.stats()["bridge_put"] == 100
    finally:
        out.kill()
        inward.kill()


def make_certificates(directory):
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    # The extensions Python 3.13's strict verification (VERIFY_X509_STRICT)
    # asks of a CA and a server certificate.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "1", "-subj", "/CN=ringshm-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=localhost")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                       "keyUsage=critical,digitalSignature,keyEncipherment\n"
                                       "extendedKeyUsage=serverAuth\n"
                                       "authorityKeyIdentifier=keyid\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.ext")
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


def test_command_over_tls(make_ring, tmp_path):
    require_nats_server()
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificates to test TLS with")
    ca, cert, key = make_certificates(tmp_path)
    server = NatsServer(tmp_path / "js", ("--tls", "--tlscert", str(cert),
                                          "--tlskey", str(key))).start()
    try:
        ring = filled(make_ring, 5)
        # Without the CA the server's certificate is not trusted: exit 1.
        done = ringshm("bridge", "out", ring.name, server.url, "--subject", SUBJECT)
        assert done.returncode == 1 and "cannot connect to NATS" in done.stderr, done
        assert len(ring) == 5
        ring.shutdown()
        done = ringshm("bridge", "out", ring.name, server.url, "--subject", SUBJECT,
                       "--tls-ca", str(ca))
        assert done.returncode == 0, done
        assert len(ring) == 0
    finally:
        server.kill()


def test_out_stops_at_a_message_larger_than_the_server_takes(make_ring, nats_server):  # noqa: F811,E501
    ring = make_ring(capacity=4 << 20)
    ring.put(b"small")
    ring.put(b"x" * (1 << 20) + b"x")   # nats-server's max_payload is 1 MiB
    ring.put(b"after")
    with pytest.raises(BridgeError, match="max_payload"):
        run_out(ring, nats_server.url, SUBJECT)
    assert [payload for payload, _ in stored(nats_server.url)] == [b"small"]
    assert len(ring) == 2   # the large one and what follows stay


@pytest.fixture
def plain_server(tmp_path):
    """A nats-server without JetStream (no -js), killed at teardown."""
    require_nats_server()
    server = NatsServer(tmp_path / "unused", jetstream=False).start()
    yield server
    server.kill()


def test_command_reports_a_server_without_jetstream(make_ring, plain_server):
    ring = make_ring()
    for argv in (["out", ring.name, plain_server.url], ["in", plain_server.url]):
        done = ringshm("bridge", *argv, "--subject", SUBJECT,
                       *([ring.name] if argv[0] == "in" else []))
        assert done.returncode == 1, done
        assert done.stderr.startswith(
            f"ringshm: error: JetStream is not enabled on {plain_server.url}"), done
        assert "nats-server -js" in done.stderr and "Traceback" not in done.stderr, done
        assert len(done.stderr.splitlines()) == 1, done


def test_the_api_reports_a_server_without_jetstream(make_ring, plain_server):
    ring = make_ring()
    ring.put(b"stays")
    expected = f"JetStream is not enabled on {plain_server.url}"
    with pytest.raises(BridgeError, match=expected):
        run_out(ring, plain_server.url, SUBJECT)
    with pytest.raises(BridgeError, match=expected):
        run_in(plain_server.url, SUBJECT, ring)
    assert ring.get() == b"stays"


def test_a_waiting_bridge_tells_a_server_without_jetstream_once(make_ring, plain_server,
                                                                tmp_path):
    ring = make_ring()
    out = Bridge(["out", ring.name, plain_server.url, "--subject", SUBJECT, "--wait"],
                 tmp_path / "out.log").start()
    try:
        time.sleep(3.0)   # several attempts with back-off (0.1, 0.2, 0.4 ... s)
        assert out.alive()
    finally:
        out.kill()
    log = out.log()
    assert log.count("JetStream is not enabled on") == 1, log
    assert "connected to NATS" not in log and "Traceback" not in log, log


def test_out_refuses_a_ring_without_identity(make_ring):
    # A ring made before ringshm wrote an identity (all zero at 1024): its
    # message ids could be any other such ring's.
    ring = make_ring()
    raw = RawHeader(ring.name)
    try:
        raw.set_u64(1024, 0)
        raw.set_u64(1032, 0)
    finally:
        raw.close()
    assert ring.identity == "0" * 32
    with pytest.raises(BridgeError, match="no identity"):
        run_out(ring, "nats://127.0.0.1:1", SUBJECT)

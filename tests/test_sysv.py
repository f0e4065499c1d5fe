"""System V rings (issue 12): a segment a C program made with ftok + shmget
is adopted by create(exist_ok=True) and opened by key; two unrelated
programs exchange 100,000 messages through one; `ipcs -m` lists it,
`ringshm ls/info` show it and `ringshm rm --sysv-key` removes it; a
persist=False segment and its lock file go with their creator (killed:
test_creator_death); the lock file is checked (missing, replaced, a link);
`ringshm gc` removes a stale one.  Behaviour, fault, wait and hostile-segment tests run
on System V rings through their backing parametrization (conftest.backing,
test_faults, test_waits, test_hostile, test_permissions)."""

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import pytest
from conftest import (
    child_env,
    remove_sysv,
    ringshm_home,
    sysv_companion,
    sysv_segments,
    track_sysv_key,
    unique_sysv_key,
)
from faultkit import RawHeader
from privateshm import in_private_tmpfs, needs_unshare

from ringshm import Ring, RingCorrupted, RingExists, RingNotFound, RingPermissionError

HEADER = 4096

# A C program of the seeds' kind: `make PATH PROJ SIZE` makes a segment of
# ftok(PATH, PROJ) and prints its key and shmid; `read PATH PROJ` attaches
# it read-only and prints the ring header's magic, capacity and messages
# put (docs/FORMAT.md offsets 0, 16 and 136).
C_PROGRAM = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>

int main(int argc, char **argv) {
    key_t key;
    if (argc < 4 || (key = ftok(argv[2], atoi(argv[3]))) == -1) {
        perror("usage: seed make|read PATH PROJ [SIZE]");
        return 2;
    }
    if (strcmp(argv[1], "make") == 0 && argc == 5) {
        int id = shmget(key, strtoul(argv[4], NULL, 0), IPC_CREAT | IPC_EXCL | 0600);
        if (id == -1) { perror("shmget"); return 1; }
        printf("%d %d\n", (int)key, id);
        return 0;
    }
    if (strcmp(argv[1], "read") == 0) {
        int id = shmget(key, 0, 0);
        const char *p = id == -1 ? (const char *)-1 : shmat(id, NULL, SHM_RDONLY);
        uint64_t capacity, messages;
        if (p == (const char *)-1) { perror("shmget/shmat"); return 1; }
        memcpy(&capacity, p + 16, 8);
        memcpy(&messages, p + 136, 8);
        printf("%.7s %llu %llu\n", p, (unsigned long long)capacity,
               (unsigned long long)messages);
        shmdt(p);
        return 0;
    }
    return 2;
}
"""

needs_cc = pytest.mark.skipif(shutil.which("cc") is None,
                              reason="no C compiler (cc) to build the seed program")


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """The compiled C program."""
    where = tmp_path_factory.mktemp("seed")
    source = where / "seed.c"
    source.write_text(C_PROGRAM)
    subprocess.run(["cc", "-O1", "-o", str(where / "seed"), str(source)], check=True)
    return str(where / "seed")


@pytest.fixture
def c_segment(seed, tmp_path):
    """c_segment(size) -> key: a segment of that size made by the C program
    with ftok (one project id per call); removed afterwards, with its lock
    file."""
    anchor = tmp_path / "anchor"
    anchor.write_text("ftok needs an existing file")
    keys = []

    def make(size, project=None):
        project = project or len(keys) + 1
        done = subprocess.run([seed, "make", str(anchor), str(project), str(size)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        key = track_sysv_key(int(done.stdout.split()[0]) & 0xFFFFFFFF)
        keys.append(key)
        return key

    make.read = lambda project: subprocess.run(
        [seed, "read", str(anchor), str(project)], capture_output=True, text=True,
        check=True).stdout.split()
    yield make
    for key in keys:
        remove_sysv(key)


def ringshm(*args):
    return subprocess.run([sys.executable, "-m", "ringshm", *args], capture_output=True,
                          text=True, cwd=ringshm_home(), env=child_env())


def segment_of(key):
    """The shmid of `key` in /proc/sysvipc/shm, None when there is none."""
    return next((shmid for k, shmid in sysv_segments() if k == key), None)


def ipcs_keys():
    return {line.split()[0] for line in subprocess.run(
        ["ipcs", "-m"], capture_output=True, text=True, check=True).stdout.splitlines()
        if line.startswith("0x")}


# ---------------------------------------------------------------- a C program's segment

@needs_cc
def test_a_c_programs_blank_segment_is_adopted_and_shared(c_segment):
    key = c_segment(HEADER + 8192)
    with pytest.raises(RingCorrupted):
        Ring.open(sysv_key=key)          # open() never writes a header
    ring = Ring.create(sysv_key=key, capacity=8192, exist_ok=True, persist=True)
    try:
        for message in (b"one", b"two", b"three"):
            ring.put(message)
        assert c_segment.read(1) == ["RINGSHM", "8192", "3"]
        again = Ring.create(sysv_key=key, capacity=4096, exist_ok=True)   # attaches
        with again, Ring.open(sysv_key=key) as opened:
            assert again.capacity == 8192 and again.get() == b"one"
            assert opened.get() == b"two"
        assert ring.get() == b"three"
        assert os.path.isfile(sysv_companion(key))
    finally:
        ring.close()
    assert segment_of(key) is not None      # persist=True: the C program's, kept


@needs_cc
def test_a_larger_c_segment_holds_a_ring_of_the_capacity_asked(c_segment):
    key = c_segment(HEADER + 5 * 4096 + 123)
    with Ring.create(sysv_key=key, capacity=8192, exist_ok=True) as ring:
        assert ring.capacity == 8192
        ring.put(b"x" * 4000)
        with Ring.open(sysv_key=key) as opened:
            assert opened.get() == b"x" * 4000
    # persist=False: this process initialised it, so it removed it.
    assert segment_of(key) is None and not os.path.exists(sysv_companion(key))


@needs_cc
def test_a_c_segment_too_small_or_not_blank_is_refused(c_segment):
    small = c_segment(HEADER + 100)
    with pytest.raises(RingCorrupted, match="too small"):
        Ring.create(sysv_key=small, capacity=8192, exist_ok=True)
    garbage = c_segment(HEADER + 8192)
    with RawHeader({"sysv_key": garbage}) as raw:
        raw._map[:HEADER] = bytes(range(256)) * (HEADER // 256)
    with pytest.raises(RingCorrupted):
        Ring.create(sysv_key=garbage, capacity=8192, exist_ok=True)
    with RawHeader({"sysv_key": garbage}) as raw:   # left as it was, and not removed
        assert bytes(raw._map[:256]) == bytes(range(256))
    assert not os.path.exists(sysv_companion(garbage))
    with pytest.raises(RingExists):
        Ring.create(sysv_key=garbage, capacity=8192)


# ---------------------------------------------------------------- unrelated programs

COUNT = 100_000
PRODUCER = r"""
import struct, sys
from ringshm import Ring
ring = Ring.open(sysv_key=int(sys.argv[1]))
for seq in range(int(sys.argv[2])):
    ring.put(struct.pack("<Q", seq) * (1 + seq % 5))
ring.close()
"""
CONSUMER = r"""
import json, struct, sys
from ringshm import Ring
ring = Ring.open(sysv_key=int(sys.argv[1]))
count = int(sys.argv[2])
got = out_of_order = bad = 0
expected = 0
while got < count:
    message = ring.get(timeout=60)
    seq = struct.unpack_from("<Q", message)[0]
    bad += message != struct.pack("<Q", seq) * (1 + seq % 5)
    out_of_order += seq != expected
    expected = seq + 1
    got += 1
print(json.dumps({"got": got, "out_of_order": out_of_order, "bad": bad,
                  "last": expected - 1}))
ring.close()
"""


def test_two_unrelated_programs_exchange_100000_messages():
    key = unique_sysv_key()
    env = child_env()
    with Ring.create(sysv_key=key, capacity=1 << 16) as ring:
        assert f"0x{key:08x}" in ipcs_keys()
        consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, str(key), str(COUNT)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        producer = subprocess.Popen([sys.executable, "-c", PRODUCER, str(key), str(COUNT)],
                                    stderr=subprocess.PIPE, env=env)
        try:
            out, err = consumer.communicate(timeout=120)
            assert consumer.returncode == 0, err.decode()
            assert producer.wait(timeout=60) == 0, producer.stderr.read().decode()
        finally:
            for process in (consumer, producer):
                if process.poll() is None:
                    process.kill()
                    process.wait()
            producer.stderr.close()
        assert json.loads(out) == {"got": COUNT, "out_of_order": 0, "bad": 0,
                                   "last": COUNT - 1}
        stats = ring.stats()
        assert stats["messages_put"] == stats["messages_got"] == COUNT
        assert len(ring) == 0
    assert f"0x{key:08x}" not in ipcs_keys()
    assert not os.path.exists(sysv_companion(key))


# ---------------------------------------------------------------- the command line

def test_ls_info_and_rm_sysv_key():
    key = unique_sysv_key()
    label = f"0x{key:08x}"
    ring = Ring.create(sysv_key=key, capacity=8192, persist=True)
    try:
        ring.put(b"counted")
        rows = [row for row in json.loads(ringshm("ls", "--json").stdout)
                if row["kind"] == "sysv" and row["key"] == key]
        assert len(rows) == 1, rows
        row = rows[0]
        assert (row["shmid"], row["nattch"], row["uid"]) == (segment_of(key), 1, os.geteuid())
        assert (row["capacity"], row["messages"], row["state"]) == (8192, 1, "ok")
        text = ringshm("ls").stdout
        assert "System V rings (ipcs -m):" in text
        assert any(line.split()[:2] == [label, str(row["shmid"])] for line in text.splitlines())
        # The lock file is no row of its own ("not a ring" or otherwise).
        assert "ringshm-sysv" not in text
        info = ringshm("info", "--sysv-key", label, "--json")
        assert info.returncode == 0, info.stderr
        assert json.loads(info.stdout)["messages"] == 1
        ring.close()
        done = ringshm("rm", "--sysv-key", label)
        assert (done.returncode, done.stderr) == (0, "")
        assert label not in ipcs_keys() and not os.path.exists(sysv_companion(key))
        again = ringshm("rm", "--sysv-key", label)
        assert again.returncode == 1 and "no System V segment" in again.stderr
        assert ringshm("info", "--sysv-key", "0").returncode == 2
    finally:
        ring.close()
        remove_sysv(key)


def test_an_idle_ring_is_marked_and_a_mapped_one_is_not():
    key = unique_sysv_key()
    try:
        Ring.create(sysv_key=key, capacity=4096, persist=True).close()
        [row] = [r for r in json.loads(ringshm("ls", "--json").stdout) if r.get("key") == key]
        assert (row["nattch"], row["state"]) == (0, "idle")
        with Ring.open(sysv_key=key):
            [row] = [r for r in json.loads(ringshm("ls", "--json").stdout)
                     if r.get("key") == key]
            assert (row["nattch"], row["state"]) == (1, "ok")
    finally:
        remove_sysv(key)


# ---------------------------------------------------------------- lifetime

def test_close_removes_the_segment_and_its_lock_file_unless_persist():
    key = unique_sysv_key()
    ring = Ring.create(sysv_key=key, capacity=4096)
    opened = Ring.open(sysv_key=key)
    try:
        ring.close()
        assert segment_of(key) is None and not os.path.exists(sysv_companion(key))
        with pytest.raises(RingNotFound):
            Ring.open(sysv_key=key)
        opened.put(b"still attached")       # IPC_RMID waits for the last detach
        assert opened.get_nowait() == b"still attached"
    finally:
        opened.close()
    kept = unique_sysv_key()
    try:
        Ring.create(sysv_key=kept, capacity=4096, persist=True).close()
        assert segment_of(kept) is not None
        with Ring.open(sysv_key=kept) as ring:
            ring.unlink()
            assert segment_of(kept) is None and not os.path.exists(sysv_companion(kept))
            with pytest.raises(RingNotFound):
                ring.unlink()
    finally:
        remove_sysv(kept)


# ---------------------------------------------------------------- the lock file

@pytest.fixture
def persistent_ring():
    key = unique_sysv_key()
    Ring.create(sysv_key=key, capacity=4096, persist=True).close()
    yield key
    remove_sysv(key)


def test_a_missing_lock_file_is_refused(persistent_ring):
    os.unlink(sysv_companion(persistent_ring))
    with pytest.raises(RingCorrupted, match="lock file"):
        Ring.open(sysv_key=persistent_ring)


def test_a_replaced_lock_file_is_refused(persistent_ring):
    """Two processes never judge liveness on different files."""
    path = sysv_companion(persistent_ring)
    os.unlink(path)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    with pytest.raises(RingCorrupted, match="another file"):
        Ring.open(sysv_key=persistent_ring)


def test_a_lock_file_that_is_a_link_is_refused(persistent_ring, tmp_path):
    path = sysv_companion(persistent_ring)
    os.unlink(path)
    (tmp_path / "elsewhere").write_bytes(b"")
    os.symlink(tmp_path / "elsewhere", path)
    with pytest.raises(RingPermissionError):
        Ring.open(sysv_key=persistent_ring)


def test_the_header_records_the_lock_files_identity(persistent_ring):
    st = os.stat(sysv_companion(persistent_ring))
    with RawHeader({"sysv_key": persistent_ring}) as raw:
        assert struct.unpack_from("<QQ", raw._map, 1088) == (st.st_dev, st.st_ino)


def test_a_stale_lock_file_of_a_removed_segment_is_replaced():
    key = unique_sysv_key()
    path = sysv_companion(key)
    with open(path, "w") as f:
        f.write("left by a ring whose segment was removed by ipcrm")
    old = os.stat(path).st_ino
    try:
        with Ring.create(sysv_key=key, capacity=4096) as ring:
            assert os.stat(path).st_ino != old and os.path.getsize(path) == 0
            ring.put(b"ok")
            assert ring.get() == b"ok"
    finally:
        remove_sysv(key)


@pytest.mark.parametrize("key", [0, 1 << 32, -(1 << 31) - 1, "0x1234", 1.5, True])
def test_bad_keys_are_refused(key):
    with pytest.raises((TypeError, ValueError), match="sysv_key"):
        Ring.create(sysv_key=key)


def test_only_one_of_name_path_or_key():
    with pytest.raises(ValueError, match="one of"):
        Ring.create("x", sysv_key=unique_sysv_key())
    with pytest.raises(TypeError, match="exactly one"):
        Ring.open("x", sysv_key=unique_sysv_key())


def test_pickles_as_its_key():
    import pickle
    key = unique_sysv_key()
    with Ring.create(sysv_key=key, capacity=4096) as ring:
        ring.put(b"through a pickle")
        with pickle.loads(pickle.dumps(ring)) as copy:
            assert copy.sysv_key == key and copy.backing == "sysv"
            assert copy.get_nowait() == b"through a pickle"
        assert repr(ring) == f"<Ring sysv_key=0x{key:08x} capacity=4096 messages=0>"


# ---------------------------------------------------------------- gc

@needs_unshare
def test_gc_removes_a_stale_sysv_ring_only():
    """In an IPC namespace of its own (and a private /dev/shm): the
    machine's segments are never candidates."""
    status, result = in_private_tmpfs(textwrap.dedent("""
        import signal, subprocess
        from ringshm import Ring, watcher
        from ringshm._backing import companion_path

        def cli(*args):
            done = subprocess.run([sys.executable, "-m", "ringshm", *args],
                                  capture_output=True, text=True)
            return done.stdout

        def stale(key):
            # A creator whose watcher never learnt of the segment (as if
            # both were killed).
            pid = os.fork()
            if pid == 0:
                try:
                    ring = Ring.create(sysv_key=key, capacity=4096)   # kept: never collected
                    watcher.unregister_sysv(ring._backing.shmid)
                    watcher.unregister(companion_path(key))
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)

        stale(0x5253AA01)
        Ring.create(sysv_key=0x5253AA02, capacity=4096, persist=True).close()   # idle
        live = Ring.create(sysv_key=0x5253AA03, capacity=4096)
        states = {r["name"]: r["state"] for r in json.loads(cli("ls", "--json"))}
        gc = cli("gc")
        left = sorted(int(line.split()[0]) & 0xFFFFFFFF
                      for line in open("/proc/sysvipc/shm").readlines()[1:])
        gc_all = cli("gc", "--persistent")
        after = sorted(int(line.split()[0]) & 0xFFFFFFFF
                       for line in open("/proc/sysvipc/shm").readlines()[1:])
        files = sorted(os.listdir(MOUNT))
        print(json.dumps({"states": states, "gc": gc, "left": left, "gc_all": gc_all,
                          "after": after, "files": files}))
    """), mount_on="/dev/shm")
    assert status == 0
    assert result["states"] == {"0x5253aa01": "stale", "0x5253aa02": "idle",
                                "0x5253aa03": "ok"}
    assert result["gc"] == "removed sysv key 0x5253aa01 (stale)\n"
    assert result["left"] == [0x5253AA02, 0x5253AA03]
    assert result["gc_all"] == "removed sysv key 0x5253aa02 (idle)\n"
    assert result["after"] == [0x5253AA03]
    assert result["files"] == ["ringshm-sysv.0x5253aa03"]

"""`ringshm gc` and the stale/idle states of `ringshm ls` (issue 8, items 6
and 9).  gc removes every stale ring of this user on the machine, so each
case runs in a mount namespace with a private /dev/shm (privateshm): the
rings of other test runs and of users are never candidates."""

import pytest
from privateshm import in_private_tmpfs, needs_unshare

pytestmark = [pytest.mark.multiprocess, needs_unshare]

SCENE = """
import signal, subprocess, time
from ringshm import Ring, watcher
from ringshm.ring import shm_path

def cli(*args):
    done = subprocess.run([sys.executable, "-m", "ringshm", *args],
                          capture_output=True, text=True)
    return {"status": done.returncode, "out": done.stdout, "err": done.stderr}

def stale(name):
    # A creator whose watcher never learnt the name (as if both were
    # killed): the name stays after the creator is gone.
    pid = os.fork()
    if pid == 0:
        try:
            ring = Ring.create(name, capacity=4096)   # kept: never collected
            watcher.unregister(shm_path(name))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)

def mapped_by_a_live_process(name):
    # It lives until killed, or until this process ends (end of its pipe).
    to_child, from_parent = os.pipe()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(from_parent)
            ring = Ring.open(name)
            os.write(write_end, b"!")
            os.read(to_child, 1)
        finally:
            os._exit(0)
    os.close(to_child)
    os.read(read_end, 1)
    return pid

stale("stale-unmapped")
stale("stale-mapped")
cli("create", "idle", "--capacity", "4K")
cli("create", "persistent-mapped", "--capacity", "4K")
live = Ring.create("live", capacity=4096)   # its creator (we) is alive
holders = [mapped_by_a_live_process(n) for n in ("stale-mapped", "persistent-mapped")]
# A corrupt one: gc leaves it to rm.
with open(shm_path("junk"), "wb") as f:
    f.write(b"junk" * 1024)
# A ring of another layout (0.1 wrote version 1), idle: gc leaves it too.
Ring.create("old-layout", capacity=4096, persist=True).close()
with open(shm_path("old-layout"), "r+b") as f:
    f.seek(8)
    f.write((1).to_bytes(4, "little"))
"""

STATES = """
import json as _json
rows = _json.loads(cli("ls", "--json")["out"])
states = {row["name"]: row["state"] for row in rows}
"""


def test_ls_marks_stale_and_idle_rings():
    status, result = in_private_tmpfs(SCENE + STATES + """
print(json.dumps({"states": states}))
for pid in holders:
    os.kill(pid, signal.SIGKILL)
""")
    assert status == 0
    assert result["states"] == {
        "stale-unmapped": "stale", "stale-mapped": "ok", "idle": "idle",
        "persistent-mapped": "ok", "live": "ok", "junk": "corrupt",
        "old-layout": "layout 1"}


def test_gc_removes_only_stale_rings_and_dry_run_nothing():
    status, result = in_private_tmpfs(SCENE + """
dry = cli("gc", "--dry-run")
after_dry = sorted(os.listdir(MOUNT))
gc = cli("gc")
after_gc = sorted(os.listdir(MOUNT))
gc_all = cli("gc", "--persistent")
after_all = sorted(os.listdir(MOUNT))
for pid in holders:
    os.kill(pid, signal.SIGKILL)
print(json.dumps({"dry": dry, "after_dry": after_dry, "gc": gc, "after_gc": after_gc,
                  "gc_all": gc_all, "after_all": after_all}))
""")
    assert status == 0
    every = ["ringshm." + n for n in
             ("idle", "junk", "live", "old-layout", "persistent-mapped", "stale-mapped",
              "stale-unmapped")]
    assert result["dry"]["status"] == 0
    assert result["dry"]["out"] == "would remove stale-unmapped (stale)\n"
    assert result["after_dry"] == every
    assert result["gc"] == {"status": 0, "out": "removed stale-unmapped (stale)\n", "err": ""}
    assert result["after_gc"] == [e for e in every if e != "ringshm.stale-unmapped"]
    assert result["gc_all"]["out"] == "removed idle (idle)\n"
    # Never a ring some live process maps, never a corrupt one, never one
    # of another layout.
    assert result["after_all"] == ["ringshm." + n for n in
                                   ("junk", "live", "old-layout", "persistent-mapped",
                                    "stale-mapped")]


def test_a_stale_ring_that_a_live_process_maps_is_kept_until_it_goes():
    status, result = in_private_tmpfs(SCENE + """
first = cli("gc")["out"]
os.kill(holders[0], signal.SIGKILL)
os.waitpid(holders[0], 0)
second = cli("gc")["out"]
os.kill(holders[1], signal.SIGKILL)
print(json.dumps({"first": first, "second": second}))
""")
    assert status == 0
    assert "stale-mapped" not in result["first"]
    assert result["second"] == "removed stale-mapped (stale)\n"


def test_gc_dry_run_says_when_nothing_would_go():
    status, result = in_private_tmpfs(SCENE.split("stale(\"stale-unmapped\")")[0] + """
cli("create", "idle", "--capacity", "4K")
print(json.dumps({"dry": cli("gc", "--dry-run"),
                  "dry_all": cli("gc", "--dry-run", "--persistent"),
                  "after": sorted(os.listdir(MOUNT))}))
""")
    assert status == 0
    assert result["dry"] == {"status": 0, "err": "",
                             "out": "nothing to remove: no stale rings of this user, "
                                    "no orphaned side files\n"}
    assert result["dry_all"]["out"] == "would remove idle (idle)\n"
    assert result["after"] == ["ringshm.idle"]


TOPICS = """
from ringshm import Topic

def stale_topic(name):
    pid = os.fork()
    if pid == 0:
        try:
            topic = Topic.create(name, capacity=4096)   # kept: never collected
            watcher.unregister(shm_path(name))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)

stale_topic("topic-stale")
cli("create", "topic-idle", "--topic")
live_topic = Topic.create("topic-live", capacity=4096)
"""


def test_gc_removes_a_stale_topic_and_with_persistent_an_idle_one():
    status, result = in_private_tmpfs(SCENE.split("stale(\"stale-unmapped\")")[0] + TOPICS +
                                      STATES + """
dry = cli("gc", "--dry-run")
gc = cli("gc")
after_gc = sorted(os.listdir(MOUNT))
gc_all = cli("gc", "--persistent")
after_all = sorted(os.listdir(MOUNT))
print(json.dumps({"states": states, "dry": dry, "gc": gc, "after_gc": after_gc,
                  "gc_all": gc_all, "after_all": after_all}))
""")
    assert status == 0
    assert result["states"] == {"topic-stale": "topic, stale", "topic-idle": "topic, idle",
                                "topic-live": "topic"}
    assert result["dry"]["out"] == "would remove topic-stale (topic, stale)\n"
    assert result["gc"]["out"] == "removed topic-stale (topic, stale)\n"
    assert result["after_gc"] == ["ringshm.topic-idle", "ringshm.topic-live"]
    assert result["gc_all"]["out"] == "removed topic-idle (topic, idle)\n"
    assert result["after_all"] == ["ringshm.topic-live"]

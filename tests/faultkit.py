"""Tools for the fault tests (test_faults.py): forked children that can be
SIGKILLed at a known point, raw access to a ring's header (the offsets of
docs/FORMAT.md), and a 1 -> 1 exchange to run under strace.

Run as a script, ``python tests/faultkit.py exchange NAME COUNT`` exchanges
COUNT messages between a forked producer and this process through the
existing ring NAME; test_faults.py runs that under ``strace -c``.
"""

import ctypes
import mmap
import os
import select
import signal
import struct
import sys
import time
import traceback

SHM_DIR = "/dev/shm"
SHM_PREFIX = "ringshm."
HEADER_SIZE = 4096

# docs/FORMAT.md, "Header"; libringshm/src/layout.h pins the same offsets.
HEAD, MESSAGES_PUT, BYTES_PUT = 128, 136, 144
PUT_INTENT = 168            # position, messages, bytes
TAIL, MESSAGES_GOT, BYTES_GOT = 256, 264, 272
GET_INTENT = 296
PUT_LOCK, GET_LOCK = 384, 512
DATA_WAITQ, SPACE_WAITQ = 640, 768
SLOT_TABLE = 2048           # 256 slots of 8 bytes: generation (u32), pid (i32)
LOCK_RECOVERIES = 8         # in a lock
LOCK_WAITQ = 16             # a lock's wait queue
WAITQ_FUTEX = 8             # the u32 futex word inside a wait queue
KIND_DATA = 0x41544144

# Every wait queue of a ring, by the name the tests use.
WAIT_QUEUES = {
    "put lock": PUT_LOCK + LOCK_WAITQ,
    "get lock": GET_LOCK + LOCK_WAITQ,
    "data": DATA_WAITQ,
    "space": SPACE_WAITQ,
}

_U64 = struct.Struct("<Q")


def token(slot, generation):
    """A lock word's value for the holder of `slot` at `generation`."""
    return (generation << 32) | slot


def token_slot(value):
    """The slot a lock token names."""
    return value & 0xFFFFFFFF


def slot_flock(kind, slot):
    """The struct flock for fcntl(F_OFD_SETLK/GETLK) over the bytes of
    `slot` (FORMAT.md, "Slots"); `kind` is fcntl.F_WRLCK or F_UNLCK."""
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, SLOT_TABLE + 8 * slot, 8, 0)


def handle(ring):
    """What a child needs to attach to `ring`: the Ring.open() keywords
    that find it, or (an anonymous ring, shared only through fork) the
    ring object itself.  See open_where()."""
    if ring.name is not None:
        return {"name": ring.name}
    if ring.path is not None:
        return {"path": ring.path}
    if ring.sysv_key is not None:
        return {"sysv_key": ring.sysv_key}
    return ring


def open_where(where):
    """Attach in a child: Ring.open(NAME) for a str, Ring.open(**where) for
    keywords, and the (forked copy of the) ring itself for a Ring."""
    from ringshm import Ring

    if isinstance(where, Ring):
        return where
    if isinstance(where, str):
        return Ring.open(where)
    return Ring.open(**where)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p
_libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.shmdt.argtypes = [ctypes.c_void_p]


class RawHeader:
    """The header page and data of a ring (a name, or open_where()'s
    keywords), mapped a second time so that a test can read and write
    fields the API does not show (FORMAT.md).  A System V segment is
    attached with shmat (ctypes) instead."""

    def __init__(self, where):
        if isinstance(where, str):
            where = {"name": where}
        self._address = None
        if "sysv_key" in where:
            key = where["sysv_key"]
            self.path = f"/SYSV{key:08x}"   # as /proc/PID/maps names the segment
            shmid = _sysv_shmid(key)
            with open("/proc/sysvipc/shm") as f:
                sizes = {int(line.split()[1]): int(line.split()[3]) for line in f.readlines()[1:]}
            address = _libc.shmat(shmid, None, 0)
            if address in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), "shmat")
            self._address = address
            segment = (ctypes.c_char * sizes[shmid]).from_address(address)
            self._map = memoryview(segment).cast("B")
            # The capacity the header gives (a segment may be larger).
            self.capacity = (_U64.unpack_from(self._map, 16)[0]
                             if len(self._map) >= HEADER_SIZE else 0)
            return
        self.path = where.get("path") or os.path.join(SHM_DIR, SHM_PREFIX + where["name"])
        fd = os.open(self.path, os.O_RDWR)
        try:
            self.capacity = os.fstat(fd).st_size - HEADER_SIZE
            self._map = mmap.mmap(fd, HEADER_SIZE + self.capacity)
        finally:
            os.close(fd)

    def close(self):
        if self._address is not None:
            self._map.release()
            _libc.shmdt(self._address)
            self._address = None
        else:
            self._map.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def u64(self, offset):
        return _U64.unpack_from(self._map, offset)[0]

    def set_u64(self, offset, value):
        _U64.pack_into(self._map, offset, value)

    def owner(self, lock):
        """The token in a lock word (PUT_LOCK or GET_LOCK)."""
        return self.u64(lock)

    def slot(self, index):
        """(generation, pid) of slot `index` of the slot table."""
        return struct.unpack_from("<Ii", self._map, SLOT_TABLE + 8 * index)

    def recoveries(self, lock):
        return self.u64(lock + LOCK_RECOVERIES)

    def wanted(self, queue):
        """The `wanted` flag of a wait queue (a WAIT_QUEUES name)."""
        return self.u64(WAIT_QUEUES[queue])

    def futex_word(self, queue):
        """The futex word of a wait queue.  Every wake adds one to it before
        FUTEX_WAKE, so it counts the wakes of the queue (mod 2**32)."""
        return struct.unpack_from("<I", self._map, WAIT_QUEUES[queue] + WAITQ_FUTEX)[0]

    def futex_address_in(self, pid, queue):
        """Where process `pid` sees the futex word of `queue`, from its
        /proc/PID/maps; None if the ring is not mapped there."""
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                fields = line.split()
                if (len(fields) >= 6 and fields[5] == self.path
                        and int(fields[2], 16) == 0):
                    base = int(fields[0].split("-")[0], 16)
                    return base + WAIT_QUEUES[queue] + WAITQ_FUTEX
        return None

    def write_record(self, at, payload):
        """Write a DATA record at byte counter `at` of the data area (nothing
        is published); returns the counter after it."""
        pos = HEADER_SIZE + (at & (self.capacity - 1))
        struct.pack_into("<II", self._map, pos, len(payload), KIND_DATA)
        self._map[pos + 8:pos + 8 + len(payload)] = payload
        return at + ((8 + len(payload) + 7) & ~7)


def _sysv_shmid(key):
    with open("/proc/sysvipc/shm") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[0]) & 0xFFFFFFFF == key:
                return int(fields[1])
    raise FileNotFoundError(f"no System V segment of key 0x{key:08x}")


def sleeping_on(pid, raw, queue):
    """True when `pid` sleeps in futex() on the futex word of `queue`
    (/proc/PID/syscall names the call and its first argument, the word's
    address); None when the kernel will not tell (another architecture, no
    permission), so callers fall back to waiting a moment."""
    futex_nr = {"x86_64": 202, "aarch64": 98}.get(os.uname().machine)
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return None
    if fields[:1] == ["running"]:
        return False
    if futex_nr is None or not fields or not fields[0].isdigit():
        return None
    if int(fields[0]) != futex_nr or len(fields) < 2:
        return False
    return int(fields[1], 16) == raw.futex_address_in(pid, queue)


def process_state(pid):
    """The state letter of /proc/PID/stat (R, S, Z, ...), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def wait_until(predicate, timeout=10.0, what="condition"):
    """Poll `predicate` until it is true; AssertionError after `timeout`."""
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


class Link:
    """The child's end of its two pipes to the parent."""

    def __init__(self, to_parent, from_parent):
        self._to_parent = to_parent
        self._from_parent = from_parent

    def ready(self, note=""):
        """Tell the parent we reached a point (with a one-line note)."""
        os.write(self._to_parent, note.encode() + b"\n")

    def wait_go(self):
        """Block until the parent calls go()."""
        os.read(self._from_parent, 1)


class Child:
    """A forked child running ``target(link, *args)``: it calls
    ``link.ready(note)`` to tell the parent it reached a point (to be killed
    at, say) and ``link.wait_go()`` to wait for the parent's go().  The
    parent reaps it whatever happens: use it as a context manager.

    A target that raises exits with status 70 and prints its traceback."""

    def __init__(self, target, *args):
        to_parent = os.pipe()
        from_parent = os.pipe()
        pid = os.fork()
        if pid == 0:   # the child: never returns into the test runner
            status = 0
            try:
                os.close(to_parent[0])
                os.close(from_parent[1])
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                target(Link(to_parent[1], from_parent[0]), *args)
            except BaseException:  # noqa: BLE001 - reported by the exit status
                traceback.print_exc()
                status = 70
            finally:
                os._exit(status)
        os.close(to_parent[1])
        os.close(from_parent[0])
        self.pid = pid
        self._from_child = os.fdopen(to_parent[0], "rb", buffering=0)
        self._to_child = from_parent[1]
        self._pending = b""
        self.status = None     # the wait status once reaped

    def wait_ready(self, timeout=30.0):
        """Block until the child calls ready(); returns its note.  Fails
        if the child dies or stays silent for `timeout` seconds."""
        give_up = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = give_up - time.monotonic()
            readable, _, _ = select.select([self._from_child], [], [], max(left, 0))
            chunk = os.read(self._from_child.fileno(), 4096) if readable else b""
            if not chunk:
                self.kill()
                raise AssertionError(f"child {self.pid} never got ready "
                                     f"(wait status {self.status})")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def go(self):
        os.write(self._to_child, b"!")

    def kill(self):
        """SIGKILL and reap (a no-op once reaped)."""
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)
            self.reap()

    def kill_unreaped(self):
        """SIGKILL and wait until it is a zombie, without reaping it."""
        os.kill(self.pid, signal.SIGKILL)
        wait_until(lambda: process_state(self.pid) in ("Z", "X", None),
                   what=f"child {self.pid} to die")

    def reap(self):
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        return self.status

    def join(self, timeout=30.0):
        """Wait for a normal exit; kill and fail after `timeout`.  Returns
        the exit code."""
        give_up = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
            elif time.monotonic() > give_up:
                self.kill()
                raise AssertionError(f"child {self.pid} did not finish in {timeout} s")
            else:
                time.sleep(0.002)
        return os.waitstatus_to_exitcode(self.status)

    def close(self):
        self.kill()
        self._from_child.close()
        os.close(self._to_child)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# ---------------------------------------------------------------- children

def hold_put_lock(link, where, payload=b"reserved", path=None):
    """Write a message inside reserve() and sleep there, holding the put lock
    (report the lock token); after go(), commit it and exit.  Opens the ring
    `where` (see open_where), or the file-backed ring at `path`."""
    ring = open_where({"path": path} if path else where)
    with ring.reserve(len(payload)) as buf:
        buf[:] = payload
        link.ready(str(ring._liveness_token()))
        link.wait_go()
    ring.close()


def hold_a_slot(link, where):
    """Take a liveness slot of the ring `where` (report the lock token it
    gives) and wait for go()."""
    ring = open_where(where)
    link.ready(str(ring._liveness_token()))
    link.wait_go()
    ring.close()


# ---------------------------------------------------------------- exchange

def exchange(name, count, size=64):
    """Send `count` messages of `size` bytes from a forked producer to this
    process through the ring `name` (1 -> 1, blocking calls)."""
    from ringshm import Ring

    message = bytes(size)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            ring = Ring.open(name)
            put = ring.put
            for _ in range(count):
                put(message)
            ring.close()
            status = 0
        finally:
            os._exit(status)
    ring = Ring.open(name)
    get = ring.get
    for _ in range(count):
        get()
    ring.close()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "exchange":
        sys.exit("usage: faultkit.py exchange NAME COUNT")
    sys.exit(exchange(sys.argv[2], int(sys.argv[3])))

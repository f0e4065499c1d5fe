"""A process that runs ring operations on hostile segments for
tests/test_hostile.py, so that a crash is seen as a negative exit status and
a hang as a missing reply, instead of killing the test run.

It reads one JSON request per line on stdin and writes one JSON reply per
line on stdout:

  {"cmd": "open", "name": N} or {"cmd": "open", "path": P}
      Ring.open() it; if that works, run every operation once.
  {"cmd": "setup", "name": N, "capacity": C}
      Create ring N (persist=True: the test unlinks it) and build the base
      images: the bytes of the whole segment in a few live states.
  {"cmd": "case", "base": I, "mutations": [...], "ops": [...], "timeout": T}
      Write base image I into ring N, open it with a guard page after the
      mapping, run the operations, close.  Each mutation [where, offset,
      how, value, phase] (see _mutate) changes the segment before open()
      (phase 0), after it (1) or half-way through the operations (2).
      Reply: {"open": "ok" or the error open() raised, "ops": [[operation,
      outcome, seconds], ...]}.
  {"cmd": "probe_guard"}
      Read the last byte of the data area (and reply), then the next one.

The ring under test is always mapped with an inaccessible page right after
its data area (which ends the mapping), so a read or write past the end of
the data area faults at once instead of landing in a neighbouring mapping.

The driver side, Child, is in this module too: the tests start one with
Child() and call request().
"""

import ctypes
import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time

import faultkit

PAGE = os.sysconf("SC_PAGE_SIZE")
HEADER_SIZE = 4096
SHM_DIR = "/dev/shm"
SHM_PREFIX = "ringshm."

# Outcomes an operation may have on a hostile segment (SPEC.md, "Errors").
ALLOWED_OUTCOMES = {"ok", "Empty", "Full", "ShutDown", "RingCorrupted"}

# Header fields the fuzz writes, by offset (docs/FORMAT.md).  Only 64..1024:
# the identity fields before 64 are read once and checked by open().
HEADER_FIELDS = {
    "flags": 64,
    "head": 128, "messages_put": 136, "bytes_put": 144, "put_waits": 152,
    "put_timeouts": 160, "put_intent.position": 168, "put_intent.messages": 176,
    "put_intent.bytes": 184,
    "tail": 256, "messages_got": 264, "bytes_got": 272, "get_waits": 280,
    "get_timeouts": 288, "get_intent.position": 296, "get_intent.messages": 304,
    "get_intent.bytes": 312,
    "put_lock.owner": 384, "put_lock.recoveries": 392, "put_lock.wanted": 400,
    "put_lock.sem": 416, "put_lock.sem.private": 424,
    "get_lock.owner": 512, "get_lock.recoveries": 520, "get_lock.wanted": 528,
    "get_lock.sem": 544, "get_lock.sem.private": 552,
    "data_waitq.wanted": 640, "data_waitq.sem": 656, "data_waitq.sem.private": 664,
    "space_waitq.wanted": 768, "space_waitq.sem": 784, "space_waitq.sem.private": 792,
}
HEAD, TAIL = HEADER_FIELDS["head"], HEADER_FIELDS["tail"]
MESSAGES_PUT, MESSAGES_GOT = HEADER_FIELDS["messages_put"], HEADER_FIELDS["messages_got"]
KIND_DATA, KIND_PADDING = 0x41544144, 0x44444150
# The slot table (FORMAT.md, "Slots"): the server itself holds the last
# slot, so a lock word can name a live holder other than the ring under test.
SLOT_TABLE = faultkit.SLOT_TABLE
LIVE_SLOT = 255


# ------------------------------------------------------------------ the driver


class ChildDied(Exception):
    """The child exited (or was killed) while a request was outstanding;
    .status is its exit status (negative: the signal that killed it)."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class Child:
    """A running hostile_child.py.  request() sends one request and returns
    the reply; it raises ChildDied (with the exit status) if the child died,
    and kills the child and raises TimeoutError if no reply comes in
    `timeout` seconds."""

    def __init__(self):
        from conftest import child_env, ringshm_home
        env = child_env()
        # stderr to a file, not a pipe: a chatty child must not block on it.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by close()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)], cwd=ringshm_home(), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)

    @property
    def alive(self):
        return self.proc.poll() is None

    def request(self, message, timeout=30.0):
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass   # reported by reply() with the exit status
        return self.reply(message, timeout)

    def reply(self, message, timeout=30.0):
        """The next line the child writes (about `message`)."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise TimeoutError(f"no reply in {timeout} s to {message}")
        line = self.proc.stdout.readline()
        if not line:
            status = self.proc.wait(timeout=10)
            self.stderr.seek(0)
            err = self.stderr.read().decode(errors="replace")
            how = (f"killed by signal {signal.Signals(-status).name}" if status < 0
                   else f"exited with status {status}")
            raise ChildDied(f"hostile child {how} on {message}\n{err[-3000:]}", status)
        return json.loads(line)

    def close(self):
        """Stop the child and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            stream.close()


# ------------------------------------------------------------------ guard pages

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PROT_NONE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = 0, 0x02, 0x20, 0x100000
MAP_FAILED = ctypes.c_void_p(-1).value


def _reserve(address, length):
    """An inaccessible anonymous mapping; at `address` exactly (None: anywhere)."""
    flags = MAP_PRIVATE | MAP_ANONYMOUS | (MAP_FIXED_NOREPLACE if address else 0)
    p = libc.mmap(address, length, PROT_NONE, flags, -1, 0)
    if p in (None, MAP_FAILED) or (address and p != address):
        raise OSError(ctypes.get_errno(), f"mmap PROT_NONE at {address} failed")
    return p


def mappings_of(path):
    """[(start, end)] of this process's mappings of the file `path`."""
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].rstrip("\n") == path:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.append((start, end))
    return found


class GuardedOpener:
    """Opens a named ring so that the page after its mapping is one of our
    PROT_NONE guards.  mmap places a new mapping at the top of the highest
    free gap that fits, right under the next mapping: so we make a hole of
    exactly the segment's size under a guard page, and fill each higher gap
    that the kernel picks instead, until the ring lands in our hole."""

    def __init__(self, name, size):
        self.name = name
        self.path = os.path.join(SHM_DIR, SHM_PREFIX + name)
        self.size = size
        self.guards = set()

    def _new_hole(self):
        p = _reserve(None, self.size + PAGE)
        libc.munmap(p, self.size)
        self.guards.add(p + self.size)

    def open(self):
        from ringshm import Ring

        if not self.guards:
            self._new_hole()
        for attempt in range(400):
            ring = Ring.open(self.name)
            (start, end), = mappings_of(self.path)
            if end in self.guards:
                return ring
            ring.close()
            _reserve(start, end - start)   # keep this gap from taking the next one
            if attempt % 16 == 15:
                self._new_hole()           # our hole may have been taken meanwhile
        raise RuntimeError("could not map the ring in front of a guard page")


# ------------------------------------------------------------------ operations


def _op_get_into(ring, t):
    buffer = bytearray(ring.capacity)
    return ring.get_into(buffer, timeout=t)


def _op_view(ring, t):
    with ring.view(timeout=t) as mv:
        return len(bytes(mv))


def _op_reserve(ring, t):
    with ring.reserve(24, timeout=t) as mv:
        mv[:] = b"r" * 24


OPERATIONS = {
    "len": lambda ring, t: len(ring),
    "stats": lambda ring, t: ring.stats(),
    "empty": lambda ring, t: ring.empty(),
    "full": lambda ring, t: ring.full(),
    "get": lambda ring, t: ring.get(timeout=t),
    "get_nowait": lambda ring, t: ring.get_nowait(),
    "get_many": lambda ring, t: ring.get_many(timeout=t),
    "get_into": _op_get_into,
    "view": _op_view,
    "put": lambda ring, t: ring.put(b"p" * 40, timeout=t),
    "put_nowait": lambda ring, t: ring.put_nowait(b"q" * 200),
    "put_many": lambda ring, t: ring.put_many([b"a" * 5, b"b" * 300, b""], timeout=t),
    "reserve": _op_reserve,
}
# The calls that may wait (for a lock, data or room) and so take a timeout.
BLOCKING = {"get", "get_many", "get_into", "view", "put", "put_many", "reserve"}


def run_operations(ring, names, timeout):
    """[(name, outcome, seconds)] for each operation: outcome is "ok", the
    name of the ringshm error it raised, or "unexpected " + the repr of any
    other exception."""
    from ringshm import RingError

    results = []
    for name in names:
        started = time.monotonic()
        try:
            OPERATIONS[name](ring, timeout)
            outcome = "ok"
        except RingError as e:
            outcome = type(e).__name__
        except Exception as e:  # noqa: BLE001 -- reported, judged by the test
            outcome = f"unexpected {e!r}"
        results.append((name, outcome, time.monotonic() - started))
    return results


# ------------------------------------------------------------------ the server


def _hold_slot(fd, slot):
    """Take `slot` of the segment open as `fd` as a process attached to the
    ring would (FORMAT.md): an OFD lock on its bytes, then a generation."""
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, faultkit.slot_flock(fcntl.F_WRLCK, slot))
    generation = struct.unpack("<I", os.pread(fd, 4, SLOT_TABLE + 8 * slot))[0] + 1
    os.pwrite(fd, struct.pack("<Ii", generation, os.getpid()), SLOT_TABLE + 8 * slot)


def _live_token(segment):
    """The token of the live holder of LIVE_SLOT: the server (its own open
    file description of the segment)."""
    generation = struct.unpack("<I", segment.read(SLOT_TABLE + 8 * LIVE_SLOT, 4))[0]
    return (generation << 32) | LIVE_SLOT


class Server:
    def __init__(self):
        self.name = None
        self.bases = []

    def open(self, request):
        from ringshm import Ring

        try:
            if "path" in request:
                ring = Ring.open(path=request["path"])
            elif "sysv_key" in request:
                ring = Ring.open(sysv_key=request["sysv_key"])
            else:
                ring = Ring.open(request["name"])
        except Exception as e:  # noqa: BLE001 -- reported, judged by the test
            return {"result": type(e).__name__, "message": str(e)}
        try:
            ops = run_operations(ring, list(OPERATIONS), 0.01)
        finally:
            ring.close()
        return {"result": "opened", "ops": ops}

    def setup(self, request):
        """Create the ring and record the segment in a few live states."""
        from ringshm import Empty, Full, Ring

        self.name, capacity = request["name"], request["capacity"]
        self.size = HEADER_SIZE + capacity
        # A long recovery interval: a wait that overran its timeout by a
        # sleep slice would show.
        creator = Ring.create(self.name, capacity=capacity, persist=True,
                              recovery_interval=request.get("recovery_interval", 2.0), spin=0)
        creator.close()
        self.fd = os.open(os.path.join(SHM_DIR, SHM_PREFIX + self.name), os.O_RDWR)
        _hold_slot(self.fd, LIVE_SLOT)
        fresh = os.pread(self.fd, self.size, 0)

        def build(steps):
            os.pwrite(self.fd, fresh, 0)
            ring = Ring.open(self.name)
            steps(ring)
            ring.close()
            self.bases.append(os.pread(self.fd, self.size, 0))

        def few(ring):       # three messages from the start
            for size in (10, 100, 500):
                ring.put(bytes([size % 256]) * size)

        def wrapped(ring):   # a message, a PADDING record at the end, then more
            ring.put(b"x" * (capacity * 7 // 16))
            ring.get()
            ring.put(b"y" * (capacity // 4))
            ring.put(b"z" * (capacity * 3 // 8))
            ring.put(b"w" * 8)

        def full(ring):      # no room left for even one byte
            n = 0
            while True:
                try:
                    ring.put_nowait(bytes([n % 256]) * (n % 97))
                except Full:
                    break
                n += 1

        def drained(ring):   # empty again, after two laps
            for _ in range(3 * capacity // 512):
                ring.put(b"d" * 400)
                ring.get()

        def small(ring):     # many small messages, some taken, one wrap
            for i in range(capacity // 32):
                ring.put(b"s" * (i % 17))
            ring.get_many(max_messages=capacity // 64)
            for _ in range(capacity // 64):
                try:
                    ring.put_nowait(b"t" * 9)
                except Full:
                    break
            try:
                ring.get_nowait()
            except Empty:
                pass

        for steps in (few, wrapped, full, drained, small):
            build(steps)
        self.opener = GuardedOpener(self.name, self.size)
        return {"bases": len(self.bases)}

    def case(self, request):
        base = self.bases[request["base"]]
        capacity = self.size - HEADER_SIZE
        # Phase 0 changes the segment before open(), phase 1 after it, phase
        # 2 half-way through the operations (the ring's caches of head and
        # tail then disagree with the segment).
        # Our own token exists only once the ring is open: "own_owner"
        # before open() is written right after it (open() reads no lock word).
        phases = [[], [], [], []]
        for mutation in request["mutations"]:
            phase = mutation[4] if len(mutation) > 4 else 0
            phases[3 if phase == 0 and mutation[2] == "own_owner" else phase].append(
                mutation[:4])
        ring = None

        def mutate(segment, phase):
            for mutation in phases[phase]:
                _mutate(segment, capacity, *mutation, ring=ring)

        image = Image(bytearray(base))
        mutate(image, 0)
        os.pwrite(self.fd, bytes(image.data), 0)
        try:
            ring = self.opener.open()
        except Exception as e:  # noqa: BLE001 -- open() refused it: judged by the test
            return {"open": type(e).__name__, "message": str(e), "ops": []}
        ops, half, timeout = request["ops"], len(request["ops"]) // 2, request["timeout"]
        try:
            mutate(LiveSegment(self.fd), 3)
            mutate(LiveSegment(self.fd), 1)
            results = run_operations(ring, ops[:half], timeout)
            mutate(LiveSegment(self.fd), 2)
            results += run_operations(ring, ops[half:], timeout)
        finally:
            ring.close()
        return {"open": "ok", "ops": results}

    def probe_guard(self, request):
        """Read the byte after the data area of a guarded ring: must fault."""
        os.pwrite(self.fd, self.bases[0], 0)
        ring = self.opener.open()
        (_, end), = mappings_of(self.opener.path)
        ctypes.string_at(end - 1, 1)   # the last byte of the data area: fine
        sys.stdout.write(json.dumps({"last_byte": "read"}) + "\n")
        sys.stdout.flush()
        ctypes.string_at(end, 1)       # one past it: SIGSEGV
        ring.close()
        return {"past_the_end": "read"}

    def serve(self):
        for line in sys.stdin:
            request = json.loads(line)
            reply = getattr(self, request["cmd"])(request)
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


class Image:
    """The bytes of a segment about to be written."""

    def __init__(self, data):
        self.data = data

    def read(self, at, n):
        return bytes(self.data[at:at + n])

    def write(self, at, data):
        self.data[at:at + len(data)] = data


class LiveSegment:
    """The segment itself, while the ring under test has it mapped."""

    def __init__(self, fd):
        self.fd = fd

    def read(self, at, n):
        return os.pread(self.fd, n, at)

    def write(self, at, data):
        os.pwrite(self.fd, data, at)


def _u64(segment, at):
    return struct.unpack("<Q", segment.read(at, 8))[0]


def _mutate(segment, capacity, where, offset, how, value, ring=None):
    """Change the segment as one mutation of the test says: `where` is
    "header" (offset from the start), "data" (from the data area's start)
    or "tail" (from the consumer's position, so it hits the next records)."""
    if where == "header":
        at = offset
    elif where == "data":
        at = HEADER_SIZE + offset
    else:
        at = HEADER_SIZE + ((_u64(segment, TAIL) + offset) & (capacity - 1))
    if how == "bytes":
        data = bytes.fromhex(value)[:HEADER_SIZE + capacity - at]
        segment.write(at, data)
        return
    old = _u64(segment, at)
    if how == "set":
        new = value
    elif how == "add":
        new = old + value
    elif how == "xor":
        new = old ^ value
    elif how == "live_owner":    # a lock held by a live process (this one's slot)
        new = _live_token(segment)
    elif how == "own_owner":     # a lock held by ourselves (the ring under test)
        new = ring._liveness_token()
    else:
        raise ValueError(how)
    segment.write(at, struct.pack("<Q", new % (1 << 64)))


# The `private` int of each glibc sem_t (at +8 of the semaphore, +24 of its
# wait queue): put_lock, get_lock, data_waitq, space_waitq.
if __name__ == "__main__":
    Server().serve()

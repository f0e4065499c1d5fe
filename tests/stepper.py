"""Single-stepping a forked child with ptrace(2) (through ctypes), for the
tests that kill a process at chosen instructions (test_counters.py).

Linux only (x86_64 and aarch64 have PTRACE_SINGLESTEP).  We are the
child's parent and the child asks for PTRACE_TRACEME, so no ptrace_scope
restriction applies.
"""

import ctypes
import os
import signal

PTRACE_TRACEME = 0
PTRACE_SINGLESTEP = 9

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def _ptrace(request, pid=0, data=0):
    if _libc.ptrace(request, pid, None, ctypes.c_void_p(data)) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request}, {pid}): {os.strerror(err)}")


def trace_me():
    """In the child: let the parent trace us."""
    _ptrace(PTRACE_TRACEME)


def stop(pid):
    """In the parent: stop the traced child (wherever it is, a system call
    included: the call is restarted when it goes on)."""
    os.kill(pid, signal.SIGSTOP)
    _, status = os.waitpid(pid, 0)
    if not os.WIFSTOPPED(status):
        raise AssertionError(f"child {pid} did not stop: wait status {status}")


def step(pid):
    """Run the stopped child for one instruction; False once it has exited."""
    _ptrace(PTRACE_SINGLESTEP, pid, 0)
    _, status = os.waitpid(pid, 0)
    # Stopped (by the step's SIGTRAP, or another signal, which is not
    # delivered: the next step passes 0) means it goes on.
    return not (os.WIFEXITED(status) or os.WIFSIGNALED(status))


def kill(pid):
    """SIGKILL the (stopped) child and reap it."""
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)

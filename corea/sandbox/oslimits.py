"""The operating-system layer: what the worker process does to itself before it runs any program.

Called once by :mod:`corea.sandbox.worker` after its imports and warm-up, in this order (each
step records what it achieved in the returned ``layers`` dict, so the parent can show and test
which layers are active on this machine):

1. ``network``: ``unshare(CLONE_NEWNET)`` -- a network namespace with no interface but a down
   loopback, so no connection can be made. Needs ``CAP_SYS_ADMIN`` (root); without it an
   unprivileged user namespace is tried (``CLONE_NEWUSER | CLONE_NEWNET``); where both are
   refused (a typical container) the seccomp filter below still refuses ``socket``.
2. ``user``: when running as root, drop to ``nobody`` (uid/gid 65534, no supplementary groups),
   after handing it the private working folder; the parent's ``/proc/<pid>/environ`` and files
   become unreadable to the worker.
3. ``rlimits``: ``RLIMIT_AS`` (address space), ``RLIMIT_FSIZE`` 0 (no file grows: writing raises
   ``SIGXFSZ``), ``RLIMIT_NPROC`` 0 (no new process or thread of this user from here; root ignores
   it, hence step 2), ``RLIMIT_CORE`` 0, ``RLIMIT_NOFILE`` small, ``RLIMIT_CPU`` hard limit for the
   worker's lifetime (the per-run soft limit is set by :func:`set_cpu_budget`).
4. ``seccomp`` (pyseccomp over libseccomp, where present): ``EPERM`` for opening any file,
   creating sockets, ``execve``, ``fork``/``clone``, ``ptrace``, namespaces, mounts, BPF and
   ``kill``; ``no_new_privs`` is set with it. Without libseccomp this step is recorded as
   unavailable and the other layers remain.

Linux only; on another system each step records ``unavailable``.

A worker never outlives the app for long without ``PR_SET_PDEATHSIG`` (which fires when the
*thread* that started the worker ends, so it would kill workers started from a request thread):
an idle worker exits on end of input, a busy one at its per-run ``RLIMIT_CPU`` (a program cannot
block: it has no I/O, no sleep and no locks).
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import sys

__all__ = ["lock_down", "set_cpu_budget", "NOBODY"]

NOBODY = 65534
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000

#: syscalls a program never needs once the worker is warm; each fails with EPERM
_DENIED_SYSCALLS = (
    "open", "openat", "openat2", "creat", "open_by_handle_at", "name_to_handle_at",
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "execve", "execveat", "fork", "vfork", "clone", "clone3", "ptrace",
    "process_vm_readv", "process_vm_writev", "kill", "tkill", "tgkill",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "bpf", "perf_event_open",
    "keyctl", "add_key", "request_key", "personality", "userfaultfd", "io_uring_setup",
    "mkdir", "mkdirat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link",
    "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown",
    "fchownat", "lchown", "truncate", "ftruncate", "mknod", "mknodat",
)


# Loaded at import, before the lock-down: ``ctypes.util.find_library`` (used by pyseccomp) runs
# ``ldconfig`` in a subprocess, which the lock-down forbids.
_LIBC = ctypes.CDLL(None, use_errno=True)
try:
    import pyseccomp
    _SECCOMP_MISSING = ""
except Exception as _exc:  # libseccomp missing: RuntimeError at import
    pyseccomp = None
    _SECCOMP_MISSING = f"unavailable ({type(_exc).__name__}: {_exc})"


def _unshare_network() -> str:
    for flags, label in ((_CLONE_NEWNET, "network namespace"),
                         (_CLONE_NEWUSER | _CLONE_NEWNET, "user + network namespace")):
        if _LIBC.unshare(flags) == 0:
            return label
    err = ctypes.get_errno()
    return f"unavailable ({os.strerror(err)}); seccomp refuses socket()"


def _drop_privileges(workdir: str) -> str:
    if os.geteuid() != 0:
        return f"unchanged (uid {os.geteuid()}, not root)"
    try:
        os.chown(workdir, NOBODY, NOBODY)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    except OSError as exc:  # a container without CAP_SETUID / CAP_SETGID
        return f"unavailable ({exc.strerror}); still uid {os.geteuid()}"
    return f"dropped to uid/gid {NOBODY}"


def _set_rlimits(memory_mb: int, cpu_lifetime_s: int) -> str:
    mem = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_lifetime_s, cpu_lifetime_s))
    return (f"AS {memory_mb} MiB, FSIZE 0, NPROC 0, CORE 0, NOFILE 16, "
            f"CPU {cpu_lifetime_s} s per worker")


def _seccomp() -> str:
    if pyseccomp is None:
        return _SECCOMP_MISSING
    filt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    denied = 0
    for name in _DENIED_SYSCALLS:
        try:
            filt.add_rule(pyseccomp.ERRNO(1), name)  # EPERM
            denied += 1
        except Exception:  # a syscall this architecture does not have
            continue
    filt.load()
    return f"{denied} syscalls refused (files, sockets, processes, signals)"


def lock_down(workdir: str, memory_mb: int, cpu_lifetime_s: int) -> dict[str, str]:
    """Apply every layer to this process (irreversibly) and say what each achieved.

    Args:
        workdir: the private working folder (already the current directory).
        memory_mb: ``RLIMIT_AS`` in MiB.
        cpu_lifetime_s: ``RLIMIT_CPU`` hard limit, CPU seconds for this worker's whole life.

    Returns:
        ``{"network": ..., "user": ..., "rlimits": ..., "seccomp": ...}``,
        each a short description or ``"unavailable (reason)"``.

    Raises:
        OSError / ValueError: the rlimits could not be set; the worker then exits before
            announcing itself ready (the pool raises ``SandboxUnavailable``).
    """
    linux = sys.platform.startswith("linux")
    # the namespace first: it needs the root capabilities that the drop below gives up
    layers = {"network": _unshare_network() if linux else "unavailable (not Linux)"}
    layers["user"] = _drop_privileges(workdir)
    layers["rlimits"] = _set_rlimits(memory_mb, cpu_lifetime_s)
    layers["seccomp"] = _seccomp() if linux else "unavailable (not Linux)"
    return layers


def set_cpu_budget(seconds: int) -> None:
    """Let the next program use ``seconds`` more CPU seconds (``RLIMIT_CPU`` soft limit; past it
    the kernel sends ``SIGXCPU``, whose default action ends the worker). Capped at the lifetime
    hard limit."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = math.ceil(used.ru_utime + used.ru_stime)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = spent + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))

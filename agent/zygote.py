# kiln fork-run zygote (agent/zygote_linux.go): a Python interpreter started once in a runner
# sandbox, before its agent drops its privileges, that forks each one-shot run into namespaces of
# its own instead of starting a new interpreter in a new sandbox. It never runs user code itself.
#
#   zygote ─clone(new mount, pid, net, ipc, uts, cgroup namespaces)─▶   (made ahead of its run)
#                    B: PID 1 of the run: fresh root (an overlay over the runner's root with a
#                       tmpfs upper), fresh /dev, /proc, /dev/shm; drops every privilege and
#                       installs the agent's seccomp filter; waits for its run (in its cgroup by
#                       then); forks C, waits for it, reports its status; exits (which ends every
#                       process left in the run's pid namespace)
#                    C: the user's program: stdio, environment, cwd and files of the request, then
#                       the file run as `python3 FILE ARGS` runs it, in this warm interpreter
#                       (a warm run); or, for an exec run (any other program, environment or
#                       pack), the program executed by a vfork of B as a plain exec starts it.
#
# Protocol on fd 3 (a SOCK_SEQPACKET socketpair with the agent): the first message is the
# configuration (JSON); each later one asks for a PID 1, made ahead of its run. The zygote
# answers {"pid": B} with B's end of a socketpair (SCM_RIGHTS), or {"error": "..."}. The agent
# puts B in the run's cgroup, then sends it the run (JSON) with its descriptors: stdin, stdout,
# stderr, status (write end). A B that could not build the run's sandbox sends why and ends. B
# writes "started\n" to the status pipe once C is forked, then C's wait status and resource
# usage as "status utime_us stime_us maxrss_kib\n"; a status pipe that ends without the first
# means the run never started, without the second that B died (killed: timeout, cancel).
import sys

_BASELINE = set(sys.modules)

import _posixsubprocess  # noqa: E402
import array  # noqa: E402
import atexit  # noqa: E402
import binascii  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
SIGCHLD = 17
SIGPIPE = 13
SIGXFSZ = 25
SYSNO = {
    "x86_64": {"pivot_root": 155, "capset": 126, "clone": 56, "close_range": 436},
    "aarch64": {"pivot_root": 41, "capset": 91, "clone": 220, "close_range": 436},
}[os.uname().machine]
EXEC_ID = "KILN_EXEC_ID"

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.mkdir.argtypes = [ctypes.c_char_p, ctypes.c_uint]
libc.mknod.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_ulong]
libc.symlink.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.chmod.argtypes = [ctypes.c_char_p, ctypes.c_uint]
libc.chdir.argtypes = [ctypes.c_char_p]
libc.rmdir.argtypes = [ctypes.c_char_p]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.syscall.restype = ctypes.c_long


def check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


class Config:
    """The runner's facts (from the agent) and, computed once here, every call a run's PID 1 makes
    to build its root and drop its privileges: a fork run's cost is mostly the pages its processes
    touch (each a copy-on-write fault), so B runs one tight loop over prepared arguments instead of
    Python code per step."""

    def __init__(self, raw):
        disk_bytes = int(raw["diskBytes"])
        seccomp = bytes.fromhex(raw["seccomp"])
        last_cap = int(raw["lastCap"])
        self._keep = []  # the buffers the plans point into
        b = lambda v: None if v is None else v.encode()  # noqa: E731
        mount, mkdir, mknod, symlink, chmod = libc.mount, libc.mkdir, libc.mknod, libc.symlink, libc.chmod
        # On the runner's /dev (a tmpfs of its own): not in the runner's root filesystem, so not in a
        # run's root, whose lower layer that is.
        scratch = "/dev/.kiln-run"
        root = scratch + "/root"
        dev = root + "/dev"
        proc = root + "/proc"
        os.makedirs(scratch, mode=0o755, exist_ok=True)  # once: each run mounts its tmpfs here
        plan = [
            (mount, (None, b"/", None, MS_REC | MS_PRIVATE, None), "make the runner's mounts private"),
            (mount, (b"tmpfs", b(scratch), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=%d,mode=0755" % disk_bytes), "mount the run's tmpfs"),
        ]
        plan += [(mkdir, (b(scratch + "/" + d), 0o755), "mkdir " + d) for d in ("upper", "work", "root", "shm")]
        plan += [
            (chmod, (b(scratch + "/shm"), 0o1777), "chmod shm"),
            (mount, (b"overlay", b(root), b"overlay", MS_NOSUID, b("lowerdir=/,upperdir=%s/upper,workdir=%s/work,userxattr" % (scratch, scratch))), "mount the run's root"),
            # /dev: the runner's device nodes on a fresh tmpfs (nothing a run creates there stays).
            (mount, (b"tmpfs", b(dev), b"tmpfs", MS_NOSUID, b"size=65536,nr_inodes=1024,mode=0755"), "mount /dev"),
        ]
        for node in ("null", "zero", "full", "random", "urandom", "tty"):
            plan.append((mknod, (b(dev + "/" + node), 0o100644, 0), "create /dev/" + node))
            plan.append((mount, (b("/dev/" + node), b(dev + "/" + node), None, MS_BIND, None), "bind /dev/" + node))
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore"), ("ptmx", "pts/ptmx")):
            plan.append((symlink, (b(target), b(dev + "/" + name)), "symlink /dev/" + name))
        plan += [
            (mkdir, (b(dev + "/pts"), 0o755), "mkdir /dev/pts"),
            (mount, (b"devpts", b(dev + "/pts"), b"devpts", MS_NOSUID | MS_NOEXEC, b"newinstance,ptmxmode=0666,mode=620"), "mount /dev/pts"),
            (mkdir, (b(dev + "/shm"), 0o755), "mkdir /dev/shm"),
            (mount, (b(scratch + "/shm"), b(dev + "/shm"), None, MS_BIND, None), "bind /dev/shm"),
        ]
        if os.path.ismount("/sys"):  # the runner's /sys (its CPUs only), read-only
            plan.append((mount, (b"/sys", b(root + "/sys"), None, MS_BIND | MS_REC, None), "bind /sys"))
            plan.append((mount, (None, b(root + "/sys"), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "make /sys read-only"))
        # /proc of the run's pid namespace, masked as the runner's is (same kernel: same entries).
        plan.append((mount, (b"proc", b(proc), b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc"))
        if os.path.ismount("/proc/cpuinfo"):
            plan.append((mount, (b"/proc/cpuinfo", b(proc + "/cpuinfo"), None, MS_BIND, None), "bind /proc/cpuinfo"))
        for name in raw["maskedProc"]:
            p = "/proc/" + name
            if os.path.isdir(p) and not os.path.islink(p):
                plan.append((mount, (b"tmpfs", b(proc + "/" + name), b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=0,mode=0555"), "mask /proc/" + name))
            elif os.path.lexists(p):
                plan.append((mount, (b(dev + "/null"), b(proc + "/" + name), None, MS_BIND, None), "mask /proc/" + name))
        plan += [
            (mkdir, (b(root + "/.kiln-old"), 0o700), "mkdir .kiln-old"),
            (libc.syscall, (SYSNO["pivot_root"], b(root), b(root + "/.kiln-old")), "pivot_root"),
            (libc.chdir, (b"/",), "chdir /"),
            (libc.umount2, (b"/.kiln-old", MNT_DETACH), "detach the runner's root"),
            (libc.rmdir, (b"/.kiln-old",), "rmdir .kiln-old"),
        ]
        self.build = plan
        # The loopback up (a new network namespace has it down): SIOCSIFFLAGS IFF_UP|IFF_LOOPBACK|IFF_RUNNING.
        self.ifreq = ctypes.create_string_buffer(struct.pack("16sH22x", b"lo", 0x1 | 0x8 | 0x40), 40)
        # Every privilege, as the agent drops its own (privdrop_linux.go), then its seccomp filter.
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        prog = ctypes.create_string_buffer(seccomp, len(seccomp))
        fprog = SockFprog(len(seccomp) // 8, ctypes.addressof(prog))
        self._keep += [header, data, prog, fprog]
        drop = [(libc.prctl, (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")]
        drop += [(libc.prctl, (PR_CAPBSET_DROP, cap, 0, 0, 0), "drop bounding capability %d" % cap) for cap in range(last_cap + 1)]
        drop += [
            (libc.prctl, (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities"),
            (libc.syscall, (SYSNO["capset"], header, data), "capset"),
            (libc.prctl, (PR_SET_DUMPABLE, 0, 0, 0, 0), "not dumpable"),
            (libc.prctl, (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "seccomp"),
        ]
        self.drop = drop


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def follow(plan):
    for fn, args, what in plan:
        if fn(*args) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def main():
    ctl = socket.socket(fileno=3)
    cfg = Config(json.loads(ctl.recv(1 << 16)))
    # os.wait4 imports the resource module at its first use: here, not in every run's PID 1.
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.wait4(pid, 0)
    # What the zygote imported is not a run's: a run imports it afresh, as a new interpreter would.
    # Removed once here (this module keeps its own references), not in every run.
    for name in [m for m in sys.modules if m not in _BASELINE]:
        del sys.modules[name]
    # Every object so far is never collected: a collection in a run would write to each one's
    # header and copy every page of the zygote's heap.
    gc.collect()
    gc.freeze()
    while True:
        try:
            msg = ctl.recv(64)
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)  # the agent is gone
        reap()
        try:
            made = prepare(cfg, ctl)
        except OSError as e:
            ctl.send(json.dumps({"error": str(e)}).encode())
            continue
        if isinstance(made, dict):
            return made  # C, the run's program: runs below, outside this loop
        pid, ours = made
        ctl.sendmsg([b'{"pid":%d}' % pid], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [ours.fileno()]))])
        ours.close()


def prepare(cfg, ctl):
    """Makes a run's PID 1 (B) by clone(2) with the new namespaces' flags, so it is PID 1 of its pid
    namespace at once (unshare then fork would take one more fork of this interpreter's address
    space). The zygote is single-threaded and holds no lock across the call; B only mounts and
    drops its privileges through ctypes, then waits for its run on a socket of its own (which the
    agent gets), and forks C with os.fork(), which gives C the C library's and Python's usual
    after-fork state.

    Returns (B's pid, the agent's end of that socket) in the zygote, the run's request in C; never
    returns in B."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP | SIGCHLD
    b = libc.syscall(SYSNO["clone"], ctypes.c_ulong(flags), None, None, None, None)
    if b < 0:
        ours.close()
        theirs.close()
        check(-1, "clone")
    if b == 0:
        ctl.close()
        ours.close()
        return run_init(cfg, theirs)  # B, then C returns from here
    theirs.close()
    return b, ours


def reap():
    """Collects the runs' ended PID 1s (children of the zygote; their status went to the agent)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_init(cfg, chan):
    try:
        follow(cfg.build)
        loopback_up(cfg)
        close_fds_except(0, 1, 2, chan.fileno())  # close_range may be filtered below
        follow(cfg.drop)
    except BaseException as e:  # noqa: BLE001: the agent reads it when it hands the run over
        try:
            chan.send(("%s" % e).encode(errors="replace"))
        except OSError:
            pass
        os._exit(1)
    # Unprivileged from here on. The agent puts this process in the run's cgroup, then hands the
    # run over: nothing of the user's starts before.
    try:
        msg, fds, _flags, _addr = socket.recv_fds(chan, 1 << 20, 4)
    except OSError:
        os._exit(1)
    if not msg or len(fds) != 4:
        os._exit(0)  # the agent is gone, or had this one made for nothing
    chan.close()
    req = json.loads(msg)
    stdin, stdout, stderr, status = fds
    if req.get("exec"):
        c = spawn_program(req, stdin, stdout, stderr)
        if c is None:  # told on its stderr; it ends as a shell's "cannot run" does
            os.write(status, b"started\n%d 0 0 0\n" % (127 << 8))
            os._exit(0)
    else:
        c = os.fork()
    if c == 0:
        os.close(status)
        for i, fd in enumerate((stdin, stdout, stderr)):
            os.dup2(fd, i)
        for fd in {stdin, stdout, stderr} - {0, 1, 2}:
            os.close(fd)
        return req
    os.write(status, b"started\n")  # before this line, nothing of the run's had started
    for fd in (stdin, stdout, stderr):
        os.close(fd)
    while True:
        try:
            pid, st, ru = os.wait4(-1, 0)
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
        if pid == c:
            break
    os.write(status, b"%d %d %d %d\n" % (st, int(ru.ru_utime * 1e6), int(ru.ru_stime * 1e6), ru.ru_maxrss))
    os._exit(0)


def close_fds_except(*keep):
    """close_range(2) over every gap between the descriptors to keep."""
    lo = 0
    for fd in sorted(set(keep)) + [0x7FFFFFFF]:
        if fd > lo:
            libc.syscall(SYSNO["close_range"], lo, fd - 1, 0)
        lo = fd + 1


def loopback_up(cfg):
    fd = libc.socket(2, 2, 0)  # AF_INET, SOCK_DGRAM
    if fd < 0:
        raise OSError(ctypes.get_errno(), "socket")
    rc = libc.ioctl(fd, 0x8914, cfg.ifreq)  # SIOCSIFFLAGS
    libc.close(fd)
    if rc != 0:
        raise OSError(ctypes.get_errno(), "bring the loopback up")


def run_program(req):
    """C: what `python3 FILE ARGS` does with FILE, in this interpreter (already started)."""
    os.setsid()
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # as a fresh process is (B is not dumpable)
    # The zygote's environment is the run's (the agent forks only such runs) but for its exec id.
    os.environ[EXEC_ID] = req["execId"]
    os.chdir(req["cwd"])
    argv = req["argv"]
    path = req["file"]  # argv[1] made absolute, as the interpreter makes __main__.__file__
    source = None
    for f in req.get("files") or []:
        data = write_file(f)
        if f["path"] == path:
            source = data
    sys.argv = argv[1:]
    sys.orig_argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.realpath(path) if os.path.islink(path) else path)
    main = type(sys)("__main__")
    loader = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", path)
    main.__dict__.update(__file__=path, __cached__=None, __builtins__=sys.modules["builtins"], __loader__=loader, __spec__=None, __annotations__={})
    sys.modules["__main__"] = main
    if source is None:
        try:
            with open(path, "rb") as fh:
                source = fh.read()
        except OSError as e:
            sys.stderr.write("%s: can't open file %r: [Errno %d] %s\n" % (argv[0], os.path.abspath(path), e.errno, e.strerror))
            finish(main, 2)
    try:
        code = compile(source, path, "exec", dont_inherit=True)
    except BaseException:
        t, v, _tb = sys.exc_info()
        v.__traceback__ = None
        sys.excepthook(t, v, None)
        finish(main, 1)
    try:
        exec(code, main.__dict__)
    except SystemExit as e:
        finish(main, exit_code(e))
    except BaseException:
        t, v, tb = sys.exc_info()
        interrupted = isinstance(v, KeyboardInterrupt)
        # Without this frame: the interpreter's own runner has no Python frame above the file's.
        v.__traceback__ = tb.tb_next
        sys.last_type, sys.last_value, sys.last_traceback = t, v, tb.tb_next
        sys.excepthook(t, v, tb.tb_next)
        del t, v, tb
        finish(main, 1, sigint=interrupted)
    finish(main, 0)


def exit_code(e):
    """What the interpreter makes of an uncaught SystemExit (Python/pythonrun.c)."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:  # noqa: BLE001
        pass
    return 1


def finish(main, code, sigint=False):
    """The end of the interpreter as a program sees it (Py_FinalizeEx): non-daemon threads joined,
    atexit handlers run, the program's globals released (their __del__ run), std streams flushed;
    then _exit, skipping the teardown of the zygote's own objects, which would write to, and so
    copy, every page of its heap."""
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    atexit._run_exitfuncs()
    flushed = flush_std()
    main.__dict__.clear()
    gc.collect()
    flushed = flush_std() and flushed
    if not flushed and code == 0:
        code = 120
    if sigint:
        import signal  # noqa: PLC0415

        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def flush_std():
    ok = True
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None:
                f.flush()
        except Exception:  # noqa: BLE001
            ok = False
    return ok


def write_file(f):
    """Returns the file's bytes (the program's source need not be read back)."""
    path = f["path"]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    mode = f.get("mode") or 0o644
    try:
        fd = os.open(path, flags, mode)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, flags, mode)
    data = binascii.a2b_base64(f["data"])
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return data


def spawn_program(req, stdin, stdout, stderr):
    """B of an exec run: the request's program started as a plain exec of the agent starts it (its
    files written, its cwd, its environment, stdio 0-2 only, a process group of its own, default
    signal dispositions), in the run's own namespaces and root. subprocess's own starter starts it
    by vfork, without copying this process's pages (glibc's posix_spawn would leave its program
    with glibc's internal signals ignored). Returns its pid, or None when it could not start: the
    reason is told on its stderr."""
    argv = req["argv"]
    try:
        for f in req.get("files") or []:
            write_file(f)
        err_r, err_w = os.pipe()
    except OSError as e:
        os.write(stderr, ("kiln: cannot run %s: %s\n" % (argv[0], e)).encode(errors="replace"))
        return None
    # As subprocess.Popen(argv, executable=exec, cwd=cwd, env=env, stdin/stdout/stderr=…,
    # close_fds=True, restore_signals=True, process_group=0) calls it (Python 3.11).
    pid = _posixsubprocess.fork_exec(
        [os.fsencode(a) for a in argv], [os.fsencode(req["exec"])], True, (), req["cwd"], [os.fsencode(kv) for kv in req["env"]],
        stdin, -1, -1, stdout, -1, stderr, err_r, err_w, True, False, 0, None, None, None, -1, None, True,
    )  # fmt: skip
    os.close(err_w)
    failed = os.read(err_r, 4096)
    os.close(err_r)
    if not failed:
        return pid
    os.waitpid(pid, 0)
    # "OSError:<errno in hex>:noexec" when the cwd failed, without "noexec" when the exec did.
    _kind, _sep, rest = failed.partition(b":")
    code, _sep, where = rest.partition(b":")
    try:
        why = os.strerror(int(code, 16))
    except ValueError:
        why = failed.decode(errors="replace")
    what = "cannot change to %s" % req["cwd"] if where == b"noexec" else "cannot run %s" % argv[0]
    os.write(stderr, ("kiln: %s: %s\n" % (what, why)).encode(errors="replace"))
    return None


run_program(main())

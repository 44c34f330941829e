"""Real faults on another process's UDP socket, for tests of how the
gateway lives with them. Nothing is compiled into the gateway for this:

  shutdown_socket(pid, port)  takes a duplicate of the process's UDP socket
      bound to port (pidfd_getfd(2), Linux 5.6+: the same ptrace access a
      debugger needs, which a parent has over its child) and shuts it down
      (SHUT_RDWR). The socket stays open but is dead for good: sends fail
      with EPIPE, and poll reports it readable (and hung up) forever. The
      same happens when any other holder of the socket (an inherited
      descriptor, a supervisor that passed it) shuts it down.
  destroy_socket(port)  "ss -K" (SOCK_DESTROY, needs CAP_NET_ADMIN and the
      udp_diag module): the kernel aborts the socket once (ECONNABORTED,
      reported as a poll error); a socket bound to an explicit port stays
      bound and works again afterwards.

Both return normally or raise FaultUnavailable with the reason.
"""

import ctypes
import os
import socket
import subprocess

SYS_pidfd_getfd = 438  # the same number on every Linux architecture


class FaultUnavailable(Exception):
    pass


def _udp_inode(pid, port):
    """The inode of pid's UDP (v4 or v6) socket bound to port."""
    for table in ("udp", "udp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                return cols[9]
    raise FaultUnavailable("no UDP socket of pid %d on port %d" % (pid, port))


def socket_fd(pid, port):
    """The descriptor number of pid's UDP socket bound to port."""
    want = "socket:[%s]" % _udp_inode(pid, port)
    d = "/proc/%d/fd" % pid
    for name in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, name)) == want:
                return int(name)
        except OSError:
            continue
    raise FaultUnavailable("pid %d holds no descriptor for %s" % (pid, want))


def shutdown_socket(pid, port):
    fd = socket_fd(pid, port)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError) as e:
        raise FaultUnavailable("pidfd_open: %s" % e)
    try:
        dup = libc.syscall(SYS_pidfd_getfd, pidfd, fd, 0)
        if dup < 0:
            raise FaultUnavailable("pidfd_getfd: %s" % os.strerror(ctypes.get_errno()))
    finally:
        os.close(pidfd)
    s = socket.socket(fileno=dup)
    try:
        # ENOTCONN for an unconnected UDP socket, but the shutdown is done.
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        s.close()


def destroy_socket(port):
    p = subprocess.run(["ss", "-K", "-u", "-a", "sport = :%d" % port],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=10)
    if p.returncode != 0 or ":%d" % port not in p.stdout:
        raise FaultUnavailable("ss -K could not destroy the socket (needs "
                               "CAP_NET_ADMIN and udp_diag): %s %s"
                               % (p.stdout.strip(), p.stderr.strip()))

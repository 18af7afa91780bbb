"""Entering network namespaces, per thread.

setns(2) changes the namespace of the calling thread only, so the node agent
can serve several pods at once, one per thread.  A netlink socket stays bound
to the namespace it was opened in, which is why opening a socket inside the
pod's namespace and stepping straight back out is all the plugin needs.

pyroute2's `IPRoute(netns=NAME)` is avoided on purpose: it forks a helper and
silently creates a namespace that does not exist.  A missing namespace must
be an error (CNI "unknown container"), never a new empty one.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from foundation.cni import spec
from foundation.cni.spec import CniError

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # <linux/nsfs.h>: _IO(0xb7, 0x3)
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def open_netns(path: str) -> int:
    """An fd for the namespace at `path`; CNI error 3 when it is not a namespace."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CniError(spec.ERR_UNKNOWN_CONTAINER, f"network namespace {path} does not exist",
                       "the container is gone; nothing to configure") from None
    except OSError as exc:
        raise CniError(spec.ERR_IO, f"cannot open network namespace {path}", str(exc)) from None
    # Ask the file what it is (one ioctl; entering it to see would cost two
    # namespace switches): a file that is no namespace answers ENOTTY.
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        os.close(fd)
        code = spec.ERR_UNKNOWN_CONTAINER if exc.errno in (errno.ENOTTY, errno.EINVAL) \
            else spec.ERR_IO
        raise CniError(code, f"{path} is not a network namespace", str(exc)) from None
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise CniError(spec.ERR_UNKNOWN_CONTAINER, f"{path} is not a network namespace",
                       "it is another kind of namespace")
    return fd


@contextmanager
def entered_fd(fd: int) -> Iterator[None]:
    """Run the body with this thread inside namespace `fd`, then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)

"""Files replaced atomically: a reader sees the old content or the new, never
half of either, and after a crash the new content is on disk or the old is.

The one way Skein writes a file others read while it runs (the node's
conflist, the lab's manifests, a diagram): a temporary file beside the target,
written and fsynced, given the target's mode, renamed over it, and the
directory fsynced so that the rename itself survives a crash.
"""

from __future__ import annotations

import os
import tempfile


def write_atomically(path: str | os.PathLike[str], data: bytes | str,
                     mode: int | None = None, skip_same: bool = False,
                     temp_prefix: str | None = None) -> bool:
    """Replace `path` with `data`.  `mode`: the file's permissions (default:
    the old file's, else 0644).  `skip_same`: leave a file that already holds
    exactly `data` alone and return False.  `temp_prefix`: how the temporary
    file's name starts (default: "." and the target's name), for a caller
    that sweeps up what a crash left behind."""
    raw = data.encode() if isinstance(data, str) else data
    path = os.fspath(path)
    if skip_same:
        try:
            with open(path, "rb") as current:
                if current.read() == raw:
                    return False
        except FileNotFoundError:
            pass
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = f".{os.path.basename(path)}." if temp_prefix is None else temp_prefix
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True

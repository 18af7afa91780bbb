"""The names of an attachment's network devices.

One rule for an interface name, the kernel's (`dev_valid_name`, which the
reference plugins' skel applies to CNI_IFNAME too), used for CNI_IFNAME, for
the names a config gives (bridge, vxlan device) and before any lookup by name;
and the node end of a pod's veth, named after the attachment so that a retried
or half-done ADD, a DEL and `skeinctl status` all find it.
"""

from __future__ import annotations

import hashlib

IFNAMSIZ = 16  # <linux/if.h>, with the terminating NUL
IFNAME_RULE = "an interface name has 1 to 15 bytes, is not '.' or '..' and has no '/', ':' or space"


def is_ifname(name: object) -> bool:
    return (isinstance(name, str) and 0 < len(name.encode()) < IFNAMSIZ
            and name not in (".", "..") and "/" not in name and ":" not in name
            and not any(c.isspace() for c in name))


def host_veth_name(container_id: str, ifname: str) -> str:
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return f"veth{digest[:8]}"

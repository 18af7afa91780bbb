"""MAC addresses: text and bytes, and the VTEP MAC every node derives from an
address (so a node never needs to publish it, and a device recreated after a
reboot keeps the MAC its peers already know)."""

from __future__ import annotations

import ipaddress

# First octets of derived VTEP MACs.  0x0e = 0000 1110: the locally
# administered bit (0x02) set and the multicast bit (0x01) clear, so the MAC
# can never collide with a vendor-assigned one nor be taken for a group
# address.  The second octet tells an IPv4-derived MAC from an IPv6-derived one.
_VTEP_PREFIX_V4 = (0x0E, 0x4B)
_VTEP_PREFIX_V6 = (0x0E, 0x6B)


def mac_bytes(mac: str) -> bytes:
    """"aa:bb:cc:dd:ee:ff" (or with '-', or none) as its six bytes."""
    try:
        raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    except ValueError:
        raise ValueError(f"not a MAC address: {mac!r}") from None
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return raw


def mac_text(raw: bytes | None) -> str:
    """Six bytes as "aa:bb:cc:dd:ee:ff"; "" for none."""
    return ":".join(f"{b:02x}" for b in raw) if raw else ""


def vtep_mac_for_ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> str:
    """A stable, locally administered unicast MAC for the VTEP of the node at `address`.

    IPv4: the prefix then the four address octets (unique per address).
    IPv6: the prefix then the low 32 bits, unique among nodes numbered inside
    one /96, which covers every sane addressing plan; a cluster that is not
    can set the annotation instead.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    prefix = _VTEP_PREFIX_V4 if ip.version == 4 else _VTEP_PREFIX_V6
    return mac_text(bytes(prefix) + ip.packed[-4:])

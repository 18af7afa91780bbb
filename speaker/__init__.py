"""Skein's speaker: announces LoadBalancer addresses by ARP/NDP or BGP."""

"""Address allocators: the host-local-compatible IPAM plugin and LoadBalancer pools."""

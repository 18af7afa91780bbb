"""skein-controller: assigns LoadBalancer addresses from IPAddressPools to Services.

`reconcile` decides (pure), `controller.Controller` keeps the allocator and
runs the loop, `writers` put statuses into the manifests file or the API,
`metrics` exposes allocation failures and pool usage, `main` wires flags.
The allocator itself is `ipam.pools`.
"""

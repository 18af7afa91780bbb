"""skein-controller: the LoadBalancer pool allocator, reconcile, writers, the daemon."""

"""Real Kubernetes for the lab: upstream binaries built from the Go module proxy."""

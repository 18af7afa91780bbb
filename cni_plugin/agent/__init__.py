"""skein-agent: the node daemon that keeps the VXLAN overlay in step with the
cluster's nodes and writes the node's CNI conflist."""

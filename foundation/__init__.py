"""What Skein's packages share, depending on nothing of ours.

- `foundation.cni`: the CNI protocol (spec, skel, names of attachments);
- `foundation.netlink`: the kernel's rtnetlink (a standard-library codec, links,
  addresses, routes), network namespaces, MAC helpers;
- `foundation.kube`: the Kubernetes object model and its two sources (a
  manifests file, the API);
- `foundation.addresses`: IP addresses, networks and ranges;
- `foundation.files`: files replaced atomically.

cni_plugin and ipam ship parts of it in the CNI executables (standard library
only); the daemons use all of it.
"""

"""Where cluster state comes from: one small interface, two kinds of source.

`Source` (foundation.kube.sources.base) is what the agent, the speaker and the
controller program against: `start()`, `snapshot()`,
`wait_for_change(since_revision, timeout)`, `subscribe(callback)`, `close()`,
plus `changes(source)` for asyncio.

- `FileSource` (foundation.kube.sources.file) follows a multi-document YAML file given
  with `--manifests FILE`; the lab and the tests use it.
- `KubeSource` (foundation.kube.sources.kube) lists and watches the Kubernetes API
  with the official client (`--kubeconfig PATH`, else in-cluster).  It is not
  re-exported here on purpose: importing it loads the kubernetes package, which
  is slow to import and which the file-mode daemons never need.

The flags that choose a source, and the daemons' other shared flags, are in
foundation.kube.cli.
"""

from foundation.kube.sources.base import Source, changes
from foundation.kube.sources.file import (
    FileSource,
    ParsedFile,
    parse_manifests,
    read_manifests,
    yaml_documents,
)

__all__ = ["FileSource", "ParsedFile", "Source", "changes", "parse_manifests", "read_manifests",
           "yaml_documents"]

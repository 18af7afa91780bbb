"""Where cluster state comes from: one small interface, two kinds of source.

`Source` (speaker.sources.base) is what the agent, the speaker and the
controller program against: `start()`, `snapshot()`,
`wait_for_change(since_revision, timeout)`, `subscribe(callback)`, `close()`,
plus `changes(source)` for asyncio.

- `FileSource` (speaker.sources.file) follows a multi-document YAML file given
  with `--manifests FILE`; the lab and the tests use it.
- The Kubernetes API source (`--kubeconfig` / in-cluster) is not written yet.
  It belongs in `speaker/sources/kube.py` as another `Source` subclass: list and
  watch each kind in `speaker.model.KINDS`, feed every object through
  `speaker.model.parse_object` (API list items pass through
  `expand_document`), keep a dict by `ref_of(obj)`, and `_publish`
  `ClusterState.from_objects(...)` after each batch of watch events.  Until it
  exists the daemons must refuse `--kubeconfig` rather than pretend.
"""

from speaker.sources.base import Source, changes
from speaker.sources.file import (
    FileSource,
    ParsedFile,
    parse_manifests,
    read_manifests,
    yaml_documents,
)

__all__ = ["FileSource", "ParsedFile", "Source", "changes", "parse_manifests", "read_manifests",
           "yaml_documents"]

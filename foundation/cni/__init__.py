"""The CNI protocol: versions, errors (the one writer of the error JSON), results
and GC's valid attachments (spec), the executable's request/response cycle
(skel), and the names an attachment gives its links (names)."""

"""The CNI protocol: versions, errors and results (spec), the executable's
request/response cycle (skel), and the names an attachment gives its links (names)."""

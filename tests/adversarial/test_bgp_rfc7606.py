"""Item 3 (RFC 7606 error handling): malformed UPDATEs from a real peer keep
the session and its routes.  Made and tested in tests/bgp/test_rfc7606.py;
run here as well, so that this tier covers the whole list."""

from tests.bgp.conftest import lab  # noqa: F401 - the fixture the test takes
from tests.bgp.test_rfc7606 import (  # noqa: F401 - collected here too
    test_malformed_updates_from_a_real_peer_keep_the_session_and_its_routes,
)

"""A BGP-4 speaker for announcing Service addresses to routers (RFC 4271 and friends).

Layout, modelled on ExaBGP: one module per message (`open`, `update`, `notification`,
`keepalive`, `route_refresh`), per attribute/capability family (`attributes`,
`capabilities`, `nlri`), framing in `header`, errors in `errors`; `packing` turns
many routes into few UPDATEs; `fsm` is the pure RFC 4271 §8 state machine;
`session`/`peer`/`speaker` put it on asyncio TCP sockets.
"""

"""A BGP-4 speaker for announcing Service addresses to routers (RFC 4271 and friends).

Layout, modelled on ExaBGP: one module per message (`open`, `update`, `notification`,
`keepalive`, `route_refresh`), per attribute/capability family (`attributes`,
`capabilities`, `nlri`), framing in `header`, the one error type in `errors`,
`message` to dispatch; `packing` turns many routes into few UPDATEs; `fsm` is the
pure RFC 4271 §8 state machine; `session` (one TCP connection), `peer` (one
neighbour: FSM + timers + Adj-RIB-Out) and `speaker` (`BgpSpeaker`, the API a
daemon drives) put it on asyncio sockets; `runner` is a small stdin/stdout process
for the lab.  Nothing is imported here so codec users do not pay for asyncio.
"""

"""A BGP-4 speaker for announcing Service addresses to routers (RFC 4271 and friends).

Layout, modelled on ExaBGP: one module per message (`open`, `update`, `notification`,
`keepalive`, `route_refresh`), per attribute/capability family (`attributes`, a
registry of self-encoding attribute classes; `capabilities`, `nlri`), framing in
`header`, the one error type in `errors`, `message` to dispatch; `negotiated` is
what a session's OPENs agreed on, handed to every codec call that depends on it;
`packing` splits many routes into few UPDATEs (which `update` alone encodes); `fsm`
is the pure RFC 4271 §8 state machine; `session` (one TCP connection), `peer` (one
neighbour: FSM + timers + Adj-RIB-Out, given its whole desired set) and `speaker`
(`BgpSpeaker`, the API a daemon drives) put it on asyncio sockets; `runner` is a
small stdin/stdout process for the lab.  Nothing is imported here so codec users
do not pay for asyncio.
"""

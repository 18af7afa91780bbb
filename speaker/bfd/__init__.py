"""Bidirectional Forwarding Detection (RFC 5880) for the speaker's BGP sessions:
single hop (RFC 5881) and multihop (RFC 5883), asynchronous mode, no echo, no
authentication.

`packet` is the control packet codec, `session` the per-session state machine and
timer arithmetic (pure), `endpoint` the thin asyncio UDP layer that runs them.
"""

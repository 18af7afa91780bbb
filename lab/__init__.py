"""The network-namespace lab: nodes, pods, routers and clients as netns on one machine.

Used by the tests and the demo.  Every name carries a random tag and everything
created is removed again; nothing is created in the root namespace except the
namespaces themselves (and the veth pairs are moved into them at once).
"""

"""Skein's CNI plugin (`skein`), its node agent and the datapath they share."""

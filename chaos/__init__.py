"""Fault injection for leadflow (``make chaos``): run a flow under faults, then check that no
event was lost or duplicated anywhere it is recorded."""

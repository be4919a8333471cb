"""`make bench`: leadflow's throughput and latency measured next to its limits and its peer.

Every scenario of one invocation reads the same pre-filled input topic on the same
local stack, so the ratios between them mean something even on a busy machine;
each figure is the median of several rounds, with min and max.
"""

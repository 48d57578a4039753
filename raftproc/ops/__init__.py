"""Operating a cluster: process control, log tailing (used by scripts/)."""

"""The node's server: the Ready driver and the rooms that do a node's IO (peers,
snapshots, clients), wired by the host."""

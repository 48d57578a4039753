"""The deterministic cluster simulator (see cluster.py)."""

from raftproc.sim.cluster import (
    FaultConfig,
    LivenessViolation,
    SafetyViolation,
    SimConfig,
    SimStats,
    Simulation,
    replay_command,
)

__all__ = [
    "FaultConfig",
    "LivenessViolation",
    "SafetyViolation",
    "SimConfig",
    "SimStats",
    "Simulation",
    "replay_command",
]

"""Fault lab: record client histories under injected faults and check them for linearizability."""

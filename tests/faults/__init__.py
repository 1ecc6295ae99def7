"""Issue 9's fault suite: real processes, faults injected, nothing lost or doubled."""

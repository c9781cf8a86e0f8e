"""What jobsync knows without I/O: job states, parsed records, the pass planner, triage, clocks."""

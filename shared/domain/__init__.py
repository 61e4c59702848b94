"""The domain: pure values and rules, no I/O (tasks, extension commands, status reports, jobs, schedules)."""

"""The engine: the run context, the executor that runs a plan, host phases (facts, install,
start), the rolling engine, membership calls with their timeouts, health gates.

May import: `orchestrator.core`, `orchestrator.adapters`, `orchestrator.ui`. Never a command.
"""

"""Commands, one file each and thin: observe, call the command's planner (in
`orchestrator.core.planners`), hand the plan to the engine (or print it for a dry run).

May import: `orchestrator.engine`, `orchestrator.adapters`, `orchestrator.core`,
`orchestrator.ui`. Only `orchestrator.cli` imports a command.
"""

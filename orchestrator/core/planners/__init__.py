"""Pure planners, one per state-changing command: observed facts in, a `core.plan.Plan` out."""

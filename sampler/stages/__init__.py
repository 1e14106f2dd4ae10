"""The stage commands the Jobs run (`negrl prepare|sample|credit|pairs|evaluate`): each reads its
stage config, calls the method's core and the grading and serving packages, writes artifacts shard
by shard and reports a termination summary. `rollout` is their shared per-unit scaffold and
`metrics` their Prometheus figures and progress view.

Imports: anything in negrl; nothing imports a stage module except the CLI.
"""

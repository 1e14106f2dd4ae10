"""`negrl run`: the same stage graph on one machine, stages as child processes and policies served
by a local vLLM (or transformers) server, with a live view in the terminal.

Imports: `api`, `reconcile` (graph and configs), `report`, and `negrl_sampler.serving` for the servers.
"""

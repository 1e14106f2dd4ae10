"""NegRL operator: the `negrl` command and everything that decides what runs where.

    api/         the NegRLExperiment spec, status, stage configs, CRD, artifact layout, Job summaries
    reconcile/   pure core: stage graph, plan(), child manifests, observation, results, conditions
    controller/  the kopf shell: watches, apply, status, Events, operator metrics (`negrl operator`)
    local/       `negrl run`: the stage graph on one machine, with a live view
    report/      the science report: estimates (pure) and the files and plot of a run

Importing this package must stay light (no kopf, no torch): the CLI and the stage configs live here.
"""

"""The science report of a run: pure estimates (per-method accuracy, SFT's scaling curve over
|D_syn|, effective data multipliers) in `estimate`, and the writer that turns them into
results.json, report.md, the plot and the terminal table.

Imports: `estimate` is pure (standard library only); the writer may touch disk, rich and matplotlib.
"""

"""NegRL trainer: data and collation, losses, the DeepSpeed engine, SFT / RFT / DPO loops and
checkpoints."""

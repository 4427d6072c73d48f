"""kms-launch's benchmark: launch cost, scaling with references, and the tools operators use today."""

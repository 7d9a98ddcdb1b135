"""What a run records beyond scalars: figures for TensorBoard and the hparams every logger receives."""

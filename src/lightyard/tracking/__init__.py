"""What a run records: TensorBoard figures and hparams, and the run's metrics.json."""

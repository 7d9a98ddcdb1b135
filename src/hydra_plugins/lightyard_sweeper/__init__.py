"""`hydra/sweeper=optuna`: Lightyard's Optuna sweeper. Hydra takes a plugin only from a class defined in
the `hydra_plugins` namespace, hence this subclass; the work is in `lightyard.sweeps`."""

from lightyard.sweeps import sweeper


class OptunaSweeper(sweeper.OptunaSweeper):
    """A study in a database, pruned trials and parallel workers (`lightyard.sweeps.sweeper`)."""

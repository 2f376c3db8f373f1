"""Jobs: what the commands run on top of sampling, models and metrics: the sweep, generation of large sample sets
(the Lightning engine in ``engine/``), the search, training, timing, the report, run identity, tracking (W&B) and
SLURM checks."""

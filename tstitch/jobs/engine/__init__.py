"""Generation at scale on Lightning: a dataset of seeds, a LightningModule whose ``predict_step`` calls the pure
``tstitch.sample``, and a writer of atomic shards that a restarted run resumes from (``stop``: a signal ends a run
within seconds, every finished shard kept). Image i depends only on seed i, never on rank, world size or batch
size."""

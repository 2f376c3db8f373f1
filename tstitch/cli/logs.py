"""What the commands print: each message once, and none of the libraries' adverts or known deprecations.

Hydra configures the logging of every command (``conf/hydra/job_logging/tstitch.yaml``): the root logger writes
to the terminal (the message alone) and to the run directory's ``<config>.log`` (with time and logger). Lightning
adds a terminal handler of its own to its ``lightning`` logger and lets records propagate to the root as well, so
the terminal handler of the root skips Lightning's records (``NotLightning``): they are printed once, by
Lightning, and logged once, to the file. The ranks Lightning starts on one machine run the command again under the
job name ``train_ddp_process_N``: the file is named by the config, so they append to the same ``<config>.log``
instead of leaving a file of their own (and in a multirun, ``tstitch.cli.generate.sweep_for_ranks`` keeps them in
this sweep's directory). ``setup`` removes the rest by exact filters, not by hiding warnings or log levels
wholesale: a new warning still shows.
"""
import logging
import re
import warnings

# (category, start of the message) of third-party warnings that say nothing about the run
WARNINGS = [
    # Lightning on a machine with SLURM's client installed, run outside SLURM (a laptop, a login node)
    (UserWarning, r"The `srun` command is available on your system but is not used"),
    # Lightning's pytree helper on torch >= 2.10, once per rank
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
]
ADVERTS = re.compile(r"💡 Tip: For seamless cloud")  # Lightning's LitLogger / litmodels tips
RANK_ZERO = "lightning.pytorch.utilities.rank_zero"  # the logger Lightning's tips come from


class NotLightning(logging.Filter):
    """For the root's terminal handler: Lightning prints its own records with its own handler."""

    def filter(self, record):
        return not (record.name == "lightning" or record.name.startswith("lightning."))


class NoAdverts(logging.Filter):
    def filter(self, record):
        return not ADVERTS.match(str(record.msg))


class Console(logging.Formatter):
    """The message alone for INFO; level and logger before anything else."""

    def format(self, record):
        text = super().format(record)
        return text if record.levelno == logging.INFO else f"{record.levelname} [{record.name}]: {text}"


def setup():
    """Filters for the known noise of Lightning and W&B; safe to call more than once (each command calls it)."""
    for category, message in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    tips = logging.getLogger(RANK_ZERO)
    if not any(isinstance(f, NoAdverts) for f in tips.filters):
        tips.addFilter(NoAdverts())

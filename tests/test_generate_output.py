"""What tstitch-generate says: a refused resume names the keys a user types (what a 2-process run prints and
leaves: test_generate.py)."""
from tstitch.jobs.generate import user_key

SMALL = ["num_samples=4", "batch_size=2", "solver.steps=2", "metric=none", "logger=none", "timing.rounds=0"]


def test_identity_keys_are_named_as_a_user_types_them():
    assert [user_key(k) for k in (
        "config.options.fractions", "config.options.steps", "config.options.solver", "config.options.guidance",
        "config.options.channels", "config.options.rule", "config.options.eta", "config.members.large.net.depth",
        "config.codec", "config.fast.precision", "config.batch_size", "config.labels", "config.seed",
        "config.accelerator", "checkpoints.large", "prompts")] == [
        "stitch.fractions", "solver.steps", "solver.name", "guidance.scale", "guidance.channels", "stitch.rule",
        "solver.options.eta", "stitch.members.large.net.depth", "stitch.codec", "fast.precision", "batch_size",
        "labels", "seed", "trainer.accelerator", "stitch.members.large.checkpoint (the content of its checkpoint)",
        "prompts (the prompt list)"]


def test_a_resume_with_other_fractions_names_stitch_fractions(tmp_path, in_process):
    run = tmp_path / "run"
    r = in_process("tstitch-generate", *SMALL, "stitch.fractions=[0.5,0.5]", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = in_process("tstitch-generate", *SMALL, "num_samples=6", "stitch.fractions=[0.4,0.6]", f"hydra.run.dir={run}")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"tstitch-generate: error: {run} holds samples made with other settings (differs in: stitch.fractions); "
        f"resume with the settings in {run / 'identity.json'}, or choose a new hydra.run.dir=...")

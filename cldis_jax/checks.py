"""The one check of a whole config that every program runs before it builds
anything (training, evaluation, navigation, editing, the latent DDIM,
sampling, the study): a bad value anywhere stops the first program that
reads the config, not the one that needs it hours later. Each entry of
CHECKS raises `errors.ConfigError` naming the bad value and what is valid; a
new capability adds its config check here."""

from cldis_jax import (config_lib, diffusion_loss, inference, latent, objective, subspaces,
                       supervision, train_step)


CHECKS = (
    ("keys, sizes and cadences", config_lib.check_config),
    ("diffusion loss", diffusion_loss.check),
    ("learning-rate schedule", lambda c: train_step.learning_rate_schedule(c.optim,
                                                                           c.train.num_steps)),
    ("code and skip dropout, guidance", inference.check_dropout_and_guidance),
    ("objective and co-pilot", lambda c: objective.check_objective(c.objective,
                                                                   c.model.copilot)),
    ("labelled factors", supervision.check),
    ("subspaces", subspaces.check),
    ("latent DDIM and sampling", latent.check),
)


def check(config) -> None:
  """Runs every entry of CHECKS on `config`."""
  for _, fn in CHECKS:
    fn(config)

"""Every experiment config loads, has only known keys, and builds its models."""

import pytest

from cldis_jax import (api, checks, config_lib, edit, errors, evaluate, models, navigate, objective,
                       sample, study, train, train_latent)
from conftest import config_path

CONFIGS = ["quickstart.py", "shapes3d.py", "dsprites.py", "mpi3d.py:toy", "mpi3d.py:real",
           "cars3d.py", "celeba64.py", "ffhq.py:64", "ffhq.py:128", "ffhq.py:256", "test.py",
           "study.py", "study.py:screen", "shapes3d_labels.py", "shapes3d_labels.py:geometry,copilot",
           "study_labels.py", "shapes3d_subspaces.py", "shapes3d_subspaces.py:cross_covariance",
           "study_subspaces.py", "copilots.py:factor_vae", "copilots.py:annealed_vae_25",
           "copilots.py:beta_vae", "study_copilots.py"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(name):
  config = config_lib.load_config(config_path(name))
  checks.check(config)
  nets = models.build_models(config.model)
  assert nets.vae.latent_dim == nets.head.latent_dim == config.model.latent_dim
  assert config.train.batch_size % 8 == 0 or name == "test.py"  # fits 8-device hosts


def test_mpi3d_names_a_bad_variant():
  with pytest.raises(ValueError, match="'simulated' is not one of"):
    config_lib.load_config(config_path("mpi3d.py:simulated"))


@pytest.mark.parametrize("name", ["study.py", "study_labels.py", "study_subspaces.py",
                                  "study_copilots.py", "study_autoencoding.py"])
def test_every_study_run_has_a_valid_config(name):
  config = config_lib.load_config(config_path(name))
  runs = study.selected_runs(config)  # checks every run's config
  assert len(runs) == len(config.study.variants) * len(config.study.seeds)
  for variant in config.study.variants:
    run = study.run_config(config, variant, 0)
    objective.check_objective(run.objective, run.model.copilot)
    models.build_models(run.model)


def test_a_copilot_preset_off_the_librarys_grid_is_refused_naming_the_valid_ones():
  with pytest.raises(ValueError, match="co-pilot preset 'factor_vae_31'; valid: .*factor_vae_30"):
    config_lib.load_config(config_path("copilots.py:factor_vae_31"))


# One bad value per section that checks.CHECKS covers, and what it must name.
_BAD_VALUES = [
    ("train.batch_size", 0, r"train.batch_size = 0"),
    ("optim.schedule", "step", r"optim.schedule = 'step'; valid: constant, cosine"),
    ("objective.branches", ("vae", "unet"), r"objective.branches"),
    ("model.copilot", "vq_vae", r"model.copilot = 'vq_vae' is not a co-pilot"),
    ("supervision.w_classify", -1.0, r"supervision.w_classify = -1.0"),
    ("subspaces.independence", "mutual", r"subspaces.independence = 'mutual'"),
    ("sample.image_steps", 7, r"sample.image_steps = 7 does not divide"),
]
_PROGRAMS = {
    "train": train.train_and_evaluate, "evaluate": evaluate.run, "navigate": navigate.run,
    "edit": edit.run, "train_latent": train_latent.run, "sample": sample.run,
    "api.load": lambda config, workdir: api.load(workdir, config),
}


@pytest.mark.parametrize("program", list(_PROGRAMS))
def test_every_program_runs_the_whole_check_before_touching_the_workdir(program, tmp_path):
  for key, value, message in _BAD_VALUES:
    config = config_lib.load_config(config_path("test.py"))
    if key.startswith(("supervision.", "subspaces.")):  # checked only when the section is on
      config.model.labels.update(factors=("floor_hue",), sizes=(10,))
      if key.startswith("subspaces."):
        config.model.labels.factors, config.model.labels.sizes = (), ()
        config.subspaces.update(blocks=("floor", "wall"), sizes=(4, 4))
    section, name = key.rsplit(".", 1)
    node = config
    for part in section.split("."):
      node = node[part]
    node[name] = value
    with pytest.raises(errors.ConfigError, match=message):
      _PROGRAMS[program](config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists(), key

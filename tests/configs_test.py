"""Every experiment config loads, has only known keys, and builds its models."""

import pytest

from cldis_jax import config_lib, models, objective, subspaces, supervision
from conftest import config_path

CONFIGS = ["quickstart.py", "shapes3d.py", "dsprites.py", "mpi3d.py:toy", "mpi3d.py:real",
           "cars3d.py", "celeba64.py", "ffhq.py:64", "ffhq.py:128", "ffhq.py:256", "test.py",
           "study.py", "study.py:screen", "shapes3d_labels.py", "shapes3d_labels.py:geometry,copilot",
           "study_labels.py", "shapes3d_subspaces.py", "shapes3d_subspaces.py:cross_covariance",
           "study_subspaces.py"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(name):
  config = config_lib.load_config(config_path(name))
  config_lib.check_config(config)
  objective.check_objective(config.objective)
  supervision.check(config)
  subspaces.check(config)
  nets = models.build_models(config.model)
  assert nets.vae.latent_dim == nets.head.latent_dim == config.model.latent_dim
  assert config.train.batch_size % 8 == 0 or name == "test.py"  # fits 8-device hosts


def test_mpi3d_names_a_bad_variant():
  with pytest.raises(ValueError, match="'simulated' is not one of"):
    config_lib.load_config(config_path("mpi3d.py:simulated"))

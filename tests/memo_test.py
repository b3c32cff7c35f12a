"""Jitted programs kept per process (cldis_jax.memo): equal configs share a
program, a change to what is trained builds a new one, and the keys that
memo ignores do not change the program."""

import jax

from cldis_jax import config_lib, memo, models, navigation, parallel, programs, train_step
from conftest import config_path


def _config():
  return config_lib.load_config(config_path("test.py"))


def test_equal_configs_share_a_program_and_a_trained_key_builds_another(tiny_models):
  mesh = parallel.data_mesh(jax.devices()[:1])
  first = train_step.make_train_step(_config(), tiny_models, mesh)
  assert train_step.make_train_step(_config(), tiny_models, mesh) is first
  other = _config()
  other.optim.learning_rate = 3e-4
  assert train_step.make_train_step(other, tiny_models, mesh) is not first
  ignored = _config()
  ignored.update_from_flattened_dict({"seed": 7, "train.log_every": 1, "samples.every": 3,
                                      "evaluate.every": 5})
  assert train_step.make_train_step(ignored, tiny_models, mesh) is first


def test_a_changed_config_after_building_does_not_change_the_kept_program(tiny_models):
  config = _config()
  nav = navigation.build(config)
  step = navigation.make_step(config, tiny_models, nav)
  config.navigate.learning_rate = 1.0  # the caller's copy, changed afterwards
  fresh = _config()
  assert navigation.make_step(fresh, tiny_models, nav) is step
  assert navigation.make_step(config, tiny_models, nav) is not step


def test_configs_differing_only_in_ignored_keys_lower_to_the_same_train_step():
  a, b = _config(), _config()
  b.update_from_flattened_dict({
      "seed": 11, "train.log_every": 1, "train.checkpoint_every": 1,
      "train.keep_checkpoints": 5, "train.async_checkpoints": False, "samples.every": 2,
      "evaluate.every": 2, "evaluate.num_train": 7, "data.num_threads": 1,
      "data.prefetch": 0})
  assert memo.config_key(a) == memo.config_key(b)
  nets = models.build_models(a.model)
  devices = jax.devices()[:1]
  mesh = parallel.data_mesh(devices)
  args = programs.train(a, nets, devices).arguments
  text = [train_step.make_train_step.__wrapped__(c, nets, mesh).lower(*args.values()).as_text()
          for c in (a, b)]
  assert text[0] == text[1]

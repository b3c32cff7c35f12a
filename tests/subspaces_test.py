"""Independent subspaces tied to regions: the renderer's region maps, mask
folders, the swap and the two independence measures, and the terms in the
training loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cldis_jax import (config_lib, data, diffusion, errors, models as models_lib, objective,
                       subspaces)
from cldis_jax.data import shapes3d

FLOOR, WALL, OBJECT = range(3)


# --- region maps ---------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", [(0, 0, 7), (7, 2, 0), (3, 3, 14)])
def test_the_region_map_is_where_each_hue_shows(geometry):
  """Changing one region's hue changes the pixels that region covers and no
  others: the map agrees with the renderer's own geometry."""
  layers = shapes3d.render_layers(np.array([geometry]), 32)
  regions = shapes3d.regions_of(layers)[0]
  base = np.array([[1, 4, 8, *geometry]])
  image = shapes3d.compose(layers, base)[0].astype(int)
  for region in (FLOOR, WALL, OBJECT):
    other = base.copy()
    other[0, region] = (other[0, region] + 5) % 10
    changed = np.abs(shapes3d.compose(layers, other)[0].astype(int) - image).sum(-1) > 0
    assert changed[regions == region].all()  # every pixel of the region shows its hue
    covered = layers[0, 4 + region] > 0
    assert not (changed & ~covered).any()  # nothing it does not cover
    assert (regions == region).mean() > 0.02


def test_a_hand_checked_scene_has_wall_above_floor_below_and_the_object_in_the_middle():
  regions = shapes3d.regions_of(shapes3d.render_layers(np.array([[7, 0, 7]]), 32))[0]
  assert (regions[0] == WALL).all() and (regions[-1] == FLOOR).all()
  assert regions[16, 16] == OBJECT
  # The object is a big cube seen head-on: left-right symmetric, in the middle.
  np.testing.assert_array_equal(regions == OBJECT, (regions == OBJECT)[:, ::-1])


def test_the_source_gives_region_maps_only_when_asked():
  plain = shapes3d.ProceduralShapes3D(16)
  assert "region" not in plain[5] and plain.region_names is None
  source = shapes3d.ProceduralShapes3D(16, regions=True)
  batch = source.__getitems__([5, 12345])
  assert batch["region"].shape == (2, 16, 16) and source.region_names == shapes3d.REGIONS
  np.testing.assert_array_equal(batch["image"], plain.__getitems__([5, 12345])["image"])


def test_a_flipped_batch_flips_its_region_maps_with_its_images():
  source = shapes3d.ProceduralShapes3D(16, regions=True)
  plan = data.BatchPlan(len(source), 8, seed=3, hflip=True)
  batch = data.InputPipeline(source, plan, num_threads=1).local_batch(0)
  flips = plan.flips(0)
  assert flips.any() and not flips.all()
  raw = source.__getitems__(plan.indices(0))
  for row, flip in enumerate(flips):
    want = raw["region"][row][:, ::-1] if flip else raw["region"][row]
    np.testing.assert_array_equal(batch["region"][row], want)


# --- mask folders --------------------------------------------------------------------------


def _mask_folder(tmp_path, masks):
  """Images a.png, b.png (24x20) and label PNGs for the given names."""
  images, mask_dir = tmp_path / "images", tmp_path / "masks"
  images.mkdir(), mask_dir.mkdir()
  for name in ("a", "b"):
    Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(images / f"{name}.png")
  for name, labels in masks.items():
    Image.fromarray(labels.astype(np.uint8)).save(mask_dir / f"{name}.png")
  config = config_lib.base_config().data
  config.update(name="folder", dir=str(images))
  config.masks.update(dir=str(mask_dir), regions=("skin", "eyes"), labels=((0, 1), (4, 5)))
  return config


def _labels(value=1):
  labels = np.full((20, 24), value)
  labels[8:12, 4:10] = 4
  labels[8:12, 14:20] = 5
  return labels


def test_masks_map_labels_to_regions_cropped_like_the_images(tmp_path):
  config = _mask_folder(tmp_path, {"a": _labels(), "b": _labels(0)})
  source = data.build_source(config, image_size=16, channels=3, regions=True)
  assert source.region_names == ("skin", "eyes")
  region = source[0]["region"]
  assert region.shape == (16, 16) and set(np.unique(region)) == {0, 1}
  # Short side 20 -> 16, centre crop of the width: the eye rows survive.
  assert (region[7:9] == 1).any()


@pytest.mark.parametrize("masks, message", [
    ({"a": _labels()}, r"mask .*b\.png of image b\.png does not exist"),
    ({"a": _labels(), "b": _labels()[:, :20]}, r"mask .*b\.png is 20x20, its image b\.png is 24x20"),
    ({"a": _labels(), "b": _labels(7)}, r"mask .*b\.png holds label 7, which no region .* "
                                        r"valid labels: 0, 1, 4, 5"),
])
def test_bad_mask_files_stop_at_start_up_naming_the_file(tmp_path, masks, message):
  config = _mask_folder(tmp_path, masks)
  with pytest.raises(data.MaskError, match=message) as error:
    data.build_source(config, image_size=16, channels=3, regions=True)
  assert "\n" not in str(error.value)


def test_data_without_regions_is_refused_naming_the_ones_that_have_them():
  config = config_lib.base_config().data
  config.name = "procedural/dsprites"
  with pytest.raises(errors.ConfigError, match="valid: procedural/shapes3d, folder"):
    data.build_source(config, image_size=16, channels=1, regions=True)


# --- the swap and the measures -------------------------------------------------------------


def test_swapping_moves_exactly_the_block_and_an_identical_block_changes_nothing():
  z_a, z_b = jnp.arange(20.0).reshape(2, 10), -jnp.ones((2, 10))
  out = subspaces.swap(z_a, z_b, jnp.array([0, 2]), (2, 3, 4))
  np.testing.assert_array_equal(out[0], [-1, -1, *range(2, 10)])
  np.testing.assert_array_equal(out[1], [*range(10, 15), -1, -1, -1, -1, 19])
  np.testing.assert_array_equal(subspaces.swap(z_a, z_a, jnp.array([1, 1]), (2, 3, 4)), z_a)


@pytest.mark.parametrize("kind", ["hsic", "cross_covariance"])
def test_each_independence_measure_is_near_zero_for_independent_blocks_and_high_for_copies(kind):
  z = jax.random.normal(jax.random.key(0), (512, 6))
  independent = float(subspaces.dependence(z, (3, 3), kind))
  copied = float(subspaces.dependence(jnp.concatenate([z[:, :3], z[:, :3]], 1), (3, 3), kind))
  # A nonlinear dependence: HSIC sees it, correlation does not.
  squared = float(subspaces.dependence(jnp.stack([z[:, 0], z[:, 0]**2], 1), (1, 1), kind))
  assert independent < 0.02 and copied > 0.3
  if kind == "hsic":
    assert copied > 0.9 and squared > 0.2
  else:
    assert squared < 0.02


def _subspace_config(**overrides):
  config = config_lib.load_config("configs/test.py")
  config.subspaces.update(dict(blocks=("floor", "wall", "object"), sizes=(4, 4, 4),
                               swap_pairs=4, w_match=1.0), **overrides)
  return config


def _terms(config, models, params, region, condition=None, seed=0):
  process = diffusion.process(config.diffusion)
  images = data.images_at(shapes3d.ProceduralShapes3D(16), [0, 1001, 52000, 300_000])
  x0 = jnp.asarray(images)
  t, eps, x_t = objective.diffusion_inputs(process, x0, jax.random.key(seed))
  z = models_lib.semantic_code(models, params, x0)
  cond = condition or (lambda code: code)
  denoise = lambda x, tt, c: models.diffae.apply({"params": params["diffae"]}, x, tt, c,
                                                 method="denoise")
  s = subspaces.swap_inputs(config, {"region": jnp.asarray(region)})
  return subspaces.subspace_terms(s, denoise, z, cond, x0, x_t, t, denoise(x_t, t, cond(z)),
                                  process, jax.random.key(seed + 1))[1]


def test_the_swap_loss_is_zero_when_the_decoder_ignores_the_blocks(tiny_models,
                                                                   random_diffae_params):
  config = _subspace_config()
  params = {"diffae": random_diffae_params}
  region = np.zeros((4, 16, 16), np.int32)
  blind = lambda code: code.at[:, :12].set(0.0)  # the denoiser never sees the blocks
  assert float(_terms(config, tiny_models, params, region, blind)["swap"]) == 0.0
  seeing = _terms(config, tiny_models, params, region)
  assert float(seeing["swap"]) > 0 and float(seeing["match"]) > 0


def test_the_swap_loss_counts_only_change_outside_the_blocks_region(tiny_models,
                                                                     random_diffae_params):
  """Every pixel in every block's region: no pixel is outside, nothing to pay."""
  config = _subspace_config(blocks=("floor",), sizes=(12,), independence="none")
  params = {"diffae": random_diffae_params}
  everywhere = _terms(config, tiny_models, params, np.zeros((4, 16, 16), np.int32))
  nowhere = _terms(config, tiny_models, params, np.ones((4, 16, 16), np.int32))
  assert float(everywhere["swap"]) == 0.0 and float(nowhere["swap"]) > 0
  assert float(nowhere["match"]) == 0.0  # no pixel is floor in both images
  assert float(everywhere["dependence"]) == 0.0


def test_the_training_loss_has_the_terms_and_they_reach_the_encoder(tiny_models, tiny_params):
  config = _subspace_config(w_swap=0.0, w_match=0.0)  # no swapped pass: no swap term
  images = shapes3d.ProceduralShapes3D(16, regions=True).__getitems__([0, 1001, 52000, 300_000])
  batch = {"image": jnp.asarray(data.to_model_range(images["image"])),
           "region": jnp.asarray(images["region"])}
  process = diffusion.process(config.diffusion)

  def loss(params, swapping):
    return objective.closed_loop_loss(params, tiny_models, process, config.objective, 1.0,
                                      batch["image"], jax.random.key(0), swapping=swapping)

  swapping = subspaces.swap_inputs(config, batch)
  # Jitted (31 s op by op, 20 s so, alone on this machine).
  plain, plain_aux = jax.jit(lambda p: loss(p, None))(tiny_params)
  total, aux = jax.jit(lambda p: loss(p, swapping))(tiny_params)
  assert "loss_dependence" in aux and not {"loss_swap", "loss_match"} & set(aux)
  assert "loss_dependence" not in plain_aux
  np.testing.assert_allclose(float(total - plain), float(aux["loss_dependence"]), rtol=1e-4)
  assert float(aux["loss_dependence"]) > 0
  grads = jax.jit(jax.grad(lambda p: loss(p, swapping)[0] - loss(p, None)[0]))(tiny_params)
  encoder = grads["diffae"]["encoder"]
  assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(encoder))) > 0


@pytest.mark.parametrize("overrides, message", [
    (dict(sizes=(4, 4)), r"subspaces.sizes = \(4, 4\) for blocks"),
    (dict(sizes=(20, 20, 20)), "take 60 dims; valid: at most model.diffae.z_dim = 32"),
    (dict(regions=("floor", "wall", "sky")), "'sky' is not a region of procedural/shapes3d; "
                                             "valid: floor, wall, object"),
    (dict(independence="mmd"), "valid: hsic, cross_covariance, none"),
])
def test_bad_subspace_settings_are_refused_with_the_valid_ones(overrides, message):
  with pytest.raises(errors.ConfigError, match=message):
    subspaces.check(_subspace_config(**overrides))


def test_subspaces_and_labelled_factors_are_refused_together():
  config = _subspace_config()
  config.model.labels.update(dict(factors=("floor_hue",), sizes=(10,)))
  with pytest.raises(errors.ConfigError, match="one of them"):
    subspaces.check(config)


@pytest.mark.slow
def test_a_tiny_run_with_subspaces_trains_evaluates_and_writes_swap_grids(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  from cldis_jax import api, edit, evaluate, train  # pylint: disable=g-import-not-at-top
  config = _subspace_config(factors=("floor_hue", "wall_hue", "object_hue"))
  config.train.update(dict(num_steps=3, checkpoint_every=3, log_every=3))
  config.samples.every = 0
  config.evaluate.update(dict(metrics=("subspaces",), representations=("mu_s",),
                              swap_images=4))
  workdir = str(tmp_path / "run")
  metrics = train.train_and_evaluate(config, workdir)
  assert {"loss_swap", "loss_match", "loss_dependence"} <= set(metrics["train"])
  result = evaluate.run(config, workdir)["results"]["subspaces"]
  assert set(result["per_block"]) == {"floor", "wall", "object"}
  assert {"out_of_region", "target", "kept"} <= set(result["swap"])
  assert set(result["dependence"]) == {"hsic", "cross_covariance"}
  model = api.load(workdir, config)
  x = model.images(count=3)
  swapped = model.swap(x, x[:2], "wall")
  assert swapped.shape == (3, 2, 16, 16, 3)
  recon = model.reconstruct(x)
  for i in range(2):  # an image's own block: its reconstruction
    np.testing.assert_allclose(swapped[i, i], recon[i], atol=1e-5)
  with pytest.raises(api.InputError, match="block 'sky' does not exist; valid: floor, wall, "
                                           "object or 0..2"):
    model.swap(x, x, "sky")
  config.edit.update(dict(directions="swaps", which=(0, 2), interpolation_steps=0))
  out = edit.run(config, workdir)
  assert [os.path.basename(f) for f in out["files"]] == ["swap_floor.png", "swap_object.png"]


def test_the_compiled_train_program_takes_the_region_maps(tiny_models):
  from cldis_jax import programs  # pylint: disable=g-import-not-at-top
  config = _subspace_config()
  program = programs.train(config, tiny_models, jax.devices()[:1])
  assert program.arguments["batch"]["region"].shape == (4, 16, 16)
  assert "tensor<4x16x16xi32>" in program.lower().as_text()  # an input of the step

"""Procedural Shapes3D / dSprites: index <-> factors is a bijection, every
factor value changes the image, rendering is deterministic and cached."""

import numpy as np
import pytest

from cldis_jax.data import dsprites, shapes3d
from cldis_jax.data.dsprites import ProceduralDSprites
from cldis_jax.data.shapes3d import ProceduralShapes3D

SOURCES = {"shapes3d": ProceduralShapes3D, "dsprites": ProceduralDSprites}
MODULES = {"shapes3d": shapes3d, "dsprites": dsprites}


def test_factor_spaces_match_the_published_datasets():
  assert shapes3d.FACTORS.names == ("floor_hue", "wall_hue", "object_hue", "scale",
                                    "shape", "orientation")
  assert shapes3d.FACTORS.sizes == (10, 10, 10, 8, 4, 15)
  assert len(shapes3d.FACTORS) == 480_000
  assert dsprites.FACTORS.sizes == (3, 6, 40, 32, 32)
  assert len(dsprites.FACTORS) == 737_280


@pytest.mark.parametrize("name", ["shapes3d", "dsprites"])
@pytest.mark.parametrize("resolution", [32, 64])
def test_index_factor_mapping_is_a_bijection(name, resolution):
  source = SOURCES[name](resolution)
  n = len(source)
  factors = source.factors_of(np.arange(n))
  assert factors.shape == (n, len(source.factor_sizes))
  assert (factors >= 0).all() and (factors < np.asarray(source.factor_sizes)).all()
  np.testing.assert_array_equal(source.index_of(factors), np.arange(n))
  assert len(np.unique(factors, axis=0)) == n  # injective, hence onto the product
  for i in (0, 1, n // 3, n - 1):
    example = source[i]
    np.testing.assert_array_equal(example["factors"], factors[i])
    assert example["image"].shape == (resolution, resolution, source.image_shape[-1])
    assert example["image"].dtype == np.uint8


@pytest.mark.parametrize("name", ["shapes3d", "dsprites"])
@pytest.mark.parametrize("resolution", [32, 64])
def test_every_factor_value_changes_the_image(name, resolution):
  module = MODULES[name]
  rng = np.random.default_rng(resolution)
  bases = np.stack([rng.integers(0, s, 3) for s in module.FACTORS.sizes], -1)
  if name == "dsprites":
    bases[:, 0] = 2  # the heart: squares and ellipses repeat under rotation
  for base in bases:
    for k, size in enumerate(module.FACTORS.sizes):
      factors = np.repeat(base[None], size, axis=0)
      factors[:, k] = np.arange(size)
      images = module.render(factors, resolution).astype(np.int16).reshape(size, -1)
      changed = (np.abs(images[:, None] - images[None]) > 8).sum(-1)
      np.fill_diagonal(changed, resolution**2)
      assert changed.min() >= 3, (
          f"{name} factor {module.FACTORS.names[k]}: two values give the same image "
          f"at {resolution}px (base {base.tolist()})")


def test_symmetric_sprites_still_change_between_neighbouring_orientations():
  for shape in (0, 1):
    factors = np.array([[shape, 5, o, 16, 16] for o in range(40)])
    images = dsprites.render(factors, 32).astype(np.int16)
    steps = np.abs(np.diff(images, axis=0)).reshape(39, -1).max(-1)
    assert (steps > 8).all()


def test_shapes3d_looks_rendered_not_flat():
  image = shapes3d.render(np.array([[0, 3, 6, 4, 2, 7]]), 64)[0].astype(int)
  assert len(np.unique(image.reshape(-1, 3), axis=0)) > 200  # shading, not swatches
  column = image[:, 5].sum(-1)  # the wall and floor darken towards their corner
  assert column.max() - column.min() > 60


@pytest.mark.parametrize("name", ["shapes3d", "dsprites"])
def test_rendering_is_deterministic_and_the_cache_is_transparent(name):
  cached, uncached = SOURCES[name](32), SOURCES[name](32, cache_mb=0)
  indices = np.random.default_rng(1).integers(0, len(cached), 24)
  first = cached.__getitems__(indices)["image"]
  again = cached.__getitems__(indices)["image"]  # from the cache
  fresh = uncached.__getitems__(indices)["image"]
  direct = MODULES[name].render(cached.factors_of(indices), 32)
  for other in (again, fresh, direct):
    np.testing.assert_array_equal(first, other)
  np.testing.assert_array_equal(cached[int(indices[3])]["image"], first[3])


def test_out_of_range_queries_name_the_problem():
  source = ProceduralShapes3D(16)
  with pytest.raises(IndexError, match="480000"):
    source[480_000]
  with pytest.raises(ValueError, match="'scale' = 8"):
    source.index_of([0, 0, 0, 8, 0, 0])
  with pytest.raises(ValueError, match="8 pixels or more"):
    ProceduralDSprites(4)

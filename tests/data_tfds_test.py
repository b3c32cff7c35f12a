"""TFDS sources, exercised with `tfds.testing.mock_data` so that the real
builders' feature specs are read, and the error for data that is not there."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cldis_jax import config_lib, data
from cldis_jax.data.tfds_sources import CELEBA_ATTRIBUTES, TfdsSource


@pytest.fixture
def mock_tfds():
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    yield


@pytest.mark.parametrize("name,native_channels,factor_sizes", [
    ("shapes3d", 3, (10, 10, 10, 8, 4, 15)),
    ("dsprites", 1, (3, 6, 40, 32, 32)),
    ("smallnorb", 1, (5, 10, 9, 18, 6)),
])
def test_ground_truth_datasets_map_labels_to_factors(mock_tfds, tmp_path, name,
                                                     native_channels, factor_sizes):
  source = TfdsSource(name, resolution=32, data_dir=str(tmp_path / "tfds"),
                      cache_dir=str(tmp_path / "cache"))
  assert len(source) == 12 and source.factor_sizes == factor_sizes
  example = source[3]
  assert example["image"].shape == (32, 32, native_channels)
  assert example["image"].dtype == np.uint8
  assert ((example["factors"] >= 0) & (example["factors"] < factor_sizes)).all()
  # Records are shuffled in TFDS files: index_of goes through a label table.
  factors = source.factors_of(np.arange(12))
  assert len(np.unique(factors, axis=0)) == 12  # the seeded mock labels do not collide
  np.testing.assert_array_equal(source.index_of(factors), np.arange(12))
  assert os.listdir(tmp_path / "cache" / "factor_tables")
  missing = next(f for f in np.ndindex(*factor_sizes)
                 if not (factors == f).all(-1).any())
  with pytest.raises(KeyError, match="no record with factors"):
    source.index_of(missing)


def test_dsprites_pixels_are_scaled_to_255(mock_tfds, tmp_path):
  raw = tfds.data_source("dsprites", split="train", data_dir=str(tmp_path))[0]["image"]
  ours = TfdsSource("dsprites", resolution=64, data_dir=str(tmp_path))[0]["image"]
  np.testing.assert_array_equal(ours, raw * np.uint8(255))


@pytest.mark.parametrize("crop,size", [("tad", 64), ("d2c", 64), ("tad", 32)])
def test_celeb_a_gives_40_attributes_and_the_standard_crop(mock_tfds, tmp_path, crop, size):
  source = TfdsSource("celeb_a", resolution=size, data_dir=str(tmp_path), celeba_crop=crop)
  example = source[0]
  assert example["image"].shape == (size, size, 3)
  assert example["attributes"].shape == (40,) and set(example["attributes"]) <= {0, 1}
  assert len(CELEBA_ATTRIBUTES) == 40 and source.attribute_names == CELEBA_ATTRIBUTES
  with pytest.raises(TypeError, match="no ground-truth factors"):
    source.index_of([0])


def test_celeb_a_tad_crop_is_resize_96_then_centre_64(mock_tfds, tmp_path):
  from PIL import Image
  raw = tfds.data_source("celeb_a", split="train", data_dir=str(tmp_path))[1]["image"]
  resized = np.asarray(Image.fromarray(raw).resize((96, 117), Image.Resampling.BILINEAR))
  expected = resized[26:90, 16:80]  # torchvision CenterCrop: round((117-64)/2) = 26
  ours = TfdsSource("celeb_a", resolution=64, data_dir=str(tmp_path))[1]["image"]
  np.testing.assert_array_equal(ours, expected)


def test_unavailable_resolution_or_channels_fail_at_start_up(mock_tfds, tmp_path):
  with pytest.raises(data.UnsupportedFormatError, match="64x64; image_size 128"):
    TfdsSource("shapes3d", resolution=128, data_dir=str(tmp_path))
  with pytest.raises(data.UnsupportedFormatError, match="gives 1 channel"):
    TfdsSource("smallnorb", resolution=64, channels=3, data_dir=str(tmp_path))


def test_build_source_reads_tfds_names_from_the_config(mock_tfds, tmp_path):
  config = config_lib.base_config()
  config.data.name, config.data.dir = "tfds/smallnorb", str(tmp_path)
  config.data.split = "test"
  source = data.build_source(config.data, image_size=64, channels=1)
  assert source.name == "tfds/smallnorb" and source[0]["image"].shape == (64, 64, 1)


def test_data_that_is_not_prepared_is_named_with_how_to_get_it(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as error:
    TfdsSource("shapes3d", resolution=64, data_dir=str(tmp_path / "nothing"))
  message = str(error.value)
  assert "shapes3d" in message and str(tmp_path / "nothing") in message
  assert "tfds build shapes3d" in message

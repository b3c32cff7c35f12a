"""File sources on small files written in the published formats: an image
folder (png / jpg), the MPI3D .npz and the Cars3D per-car .mat files."""

import logging

import numpy as np
import pytest
import scipy.io
from PIL import Image

from cldis_jax import config_lib, data
from cldis_jax.data.arrays import Cars3D, MPI3D


def _photo(rng, height, width):
  return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def photo_folder(tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / "sub").mkdir()
  Image.fromarray(_photo(rng, 40, 60)).save(tmp_path / "a.png")
  Image.fromarray(_photo(rng, 50, 50)).save(tmp_path / "sub" / "b.jpg", quality=95)
  Image.fromarray(_photo(rng, 30, 20)).save(tmp_path / "c.JPEG")
  (tmp_path / "notes.txt").write_text("not an image")
  return tmp_path


def test_image_folder_finds_photos_recursively_and_crops_them(photo_folder):
  source = data.ImageFolder(str(photo_folder), resolution=16)
  assert [p.split("/")[-1] for p in source.files] == ["a.png", "c.JPEG", "b.jpg"]
  for i in range(3):
    assert source[i]["image"].shape == (16, 16, 3)
  # a.png is 40 x 60: the short side goes to 16 (16 x 24), then the centre 16 columns.
  expected = np.asarray(Image.open(photo_folder / "a.png").resize(
      (24, 16), Image.Resampling.BILINEAR))[:, 4:20]
  np.testing.assert_array_equal(source[0]["image"], expected)
  assert data.ImageFolder(str(photo_folder), resolution=8, channels=1)[2]["image"].shape == (8, 8, 1)


def test_corrupt_images_stop_the_run_or_are_skipped_and_counted(photo_folder, caplog):
  (photo_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
  with pytest.raises(data.CorruptImageError, match="broken.png.*on_bad_image='skip'"):
    data.ImageFolder(str(photo_folder), resolution=16)  # when it opens, before training
  lenient = data.ImageFolder(str(photo_folder), resolution=16, on_bad_image="skip")
  broken = lenient.files.index(str(photo_folder / "broken.png"))
  with caplog.at_level(logging.WARNING):
    image = lenient[broken]["image"]
  np.testing.assert_array_equal(image, lenient[broken + 1]["image"])  # the next one
  assert lenient.skipped == {str(photo_folder / "broken.png")}
  assert "broken.png" in caplog.text


def test_missing_or_empty_folders_are_named(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="nowhere.*does not exist"):
    data.ImageFolder(str(tmp_path / "nowhere"), resolution=16)
  with pytest.raises(data.DatasetNotFoundError, match="holds no"):
    data.ImageFolder(str(tmp_path), resolution=16)


SMALL_MPI3D = (2, 3, 2, 1, 1, 2, 2)  # the published layout with fewer values


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_mpi3d_reads_the_published_npz_layout(tmp_path, save):
  n = int(np.prod(SMALL_MPI3D))
  images = np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
  save(tmp_path / "mpi3d_toy.npz", images=images)
  source = MPI3D(str(tmp_path), variant="toy", resolution=64, factor_sizes=SMALL_MPI3D)
  assert isinstance(source.images, np.memmap) == (save is np.savez)
  index = source.index_of([1, 2, 0, 0, 0, 1, 0])
  assert index == np.ravel_multi_index((1, 2, 0, 0, 0, 1, 0), SMALL_MPI3D)
  np.testing.assert_array_equal(source[index]["image"], images[index])
  np.testing.assert_array_equal(source[index]["factors"], [1, 2, 0, 0, 0, 1, 0])
  small = MPI3D(str(tmp_path), resolution=32, factor_sizes=SMALL_MPI3D)[index]["image"]
  np.testing.assert_allclose(small.astype(float),
                             images[index].reshape(32, 2, 32, 2, 3).mean((1, 3)), atol=1)


def test_mpi3d_with_the_wrong_size_or_no_file_says_so(tmp_path):
  np.savez(tmp_path / "mpi3d_real.npz", images=np.zeros((5, 64, 64, 3), np.uint8))
  with pytest.raises(ValueError, match=r"expected images of shape \(1036800, 64, 64, 3\)"):
    MPI3D(str(tmp_path), variant="real")
  with pytest.raises(data.DatasetNotFoundError, match="mpi3d_realistic.npz.*Download"):
    MPI3D(str(tmp_path), variant="realistic")


@pytest.mark.parametrize("layout", ["azimuth_then_elevation", "elevation_then_azimuth"])
def test_cars3d_reads_per_car_mat_files(tmp_path, layout):
  rng = np.random.default_rng(0)
  views = [rng.integers(0, 256, (4, 24, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
  for car, v in enumerate(views):  # the published file is 'im' of (H, W, 3, 24, 4)
    im = v.transpose(2, 3, 4, 1, 0) if layout == "azimuth_then_elevation" else \
        v.transpose(2, 3, 4, 0, 1)
    scipy.io.savemat(tmp_path / f"car_{car + 1:03d}_mesh.mat", {"im": im})
  source = Cars3D(str(tmp_path), resolution=32)
  assert source.factor_sizes == (4, 24, 2) and len(source) == 192
  index = source.index_of([3, 17, 1])
  np.testing.assert_array_equal(source[index]["image"], views[1][3, 17])
  assert Cars3D(str(tmp_path), resolution=16)[index]["image"].shape == (16, 16, 3)
  with pytest.raises(data.UnsupportedFormatError, match="32x32"):
    Cars3D(str(tmp_path), resolution=64)


def test_cars3d_without_files_says_how_to_get_them(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="no .mat files.*car_001_mesh.mat"):
    Cars3D(str(tmp_path))


def test_build_source_checks_names_keys_and_channels(tmp_path):
  config = config_lib.base_config()
  config.data.name = "procedural/shapes3"
  with pytest.raises(ValueError, match="did you mean procedural/shapes3d"):
    data.build_source(config.data, image_size=32, channels=3)
  config.data.name = "procedural/dsprites"
  with pytest.raises(data.UnsupportedFormatError, match="gives 1 channel"):
    data.build_source(config.data, image_size=32, channels=3)
  config.data.unknown_key = 1
  with pytest.raises(ValueError, match="data.unknown_key"):
    data.build_source(config.data, image_size=32, channels=1)
  config = config_lib.base_config()
  config.data.name, config.data.dir = "folder", str(tmp_path / "photos")
  with pytest.raises(data.DatasetNotFoundError, match="photos"):
    data.build_source(config.data, image_size=32, channels=3)

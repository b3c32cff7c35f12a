"""Ground-truth datasets published as array files: MPI3D (one .npz of images)
and Cars3D (one .mat file per car). Both are read from a user-given directory;
nothing is downloaded."""

import glob
import os
import zipfile

import numpy as np

from cldis_jax import errors
from cldis_jax.data.source import (DatasetNotFoundError, FactorSpace, ImageCache,
                                   Source, check_channels, check_resolution, resize)

MPI3D_NAMES = ("object_color", "object_shape", "object_size", "camera_height",
               "background_color", "horizontal_axis", "vertical_axis")
MPI3D_SIZES = (6, 6, 2, 3, 3, 40, 40)  # 1,036,800 images, row-major
MPI3D_FILES = {"toy": "mpi3d_toy.npz", "realistic": "mpi3d_realistic.npz",
               "real": "mpi3d_real.npz"}
_MPI3D_HOWTO = ("Download {file} from the MPI3D dataset page "
                "(github.com/rr-learning/disentanglement_dataset) into {dir} and set "
                "config.data.dir to that directory.")

CARS3D_NAMES = ("elevation", "azimuth", "object")
_CARS3D_HOWTO = ("Cars3D (Reed et al., 2015) is the folder of per-car files "
                 "car_001_mesh.mat ... car_183_mesh.mat from nips2015-analogy-data.tar.gz "
                 "(its data/cars directory); set config.data.dir to that directory.")


def open_npz_array(path: str, key: str) -> np.ndarray:
  """An array inside an .npz: memory-mapped when stored uncompressed (as
  np.savez writes), else read into memory."""
  member = key + ".npy"
  with zipfile.ZipFile(path) as archive:
    if member not in archive.namelist():
      raise errors.DataError(f"{path} has no array {key!r}; it holds "
                             f"{[n[:-4] for n in archive.namelist()]}")
    info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
      with archive.open(member) as f:
        return np.lib.format.read_array(f)
  with open(path, "rb") as f:
    f.seek(info.header_offset)
    local_header = f.read(30)
    name_length = int.from_bytes(local_header[26:28], "little")
    extra_length = int.from_bytes(local_header[28:30], "little")
    f.seek(info.header_offset + 30 + name_length + extra_length)
    major, _ = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if major == 1
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(f)
    offset = f.tell()
  return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                   order="F" if fortran else "C")


class MPI3D(Source):
  """MPI3D toy / realistic / real (Gondal et al., 2019), 64 x 64 RGB."""

  def __init__(self, data_dir: str, *, variant: str = "toy", resolution: int = 64,
               channels: int = 3, factor_sizes=MPI3D_SIZES):
    if variant not in MPI3D_FILES:
      raise errors.ConfigError(f"MPI3D variant {variant!r} is not one of {tuple(MPI3D_FILES)}")
    self.name, self.resolution = f"mpi3d_{variant}", resolution
    check_resolution(self.name, resolution, 64)
    check_channels(self.name, channels, (3,))
    path = os.path.join(data_dir or "", MPI3D_FILES[variant])
    if not os.path.isfile(path):
      raise DatasetNotFoundError(f"{self.name}: {path!r} does not exist. " + _MPI3D_HOWTO.format(
          file=MPI3D_FILES[variant], dir=data_dir or "a directory"))
    self.factor_space = FactorSpace(MPI3D_NAMES, tuple(factor_sizes))
    images = open_npz_array(path, "images")
    if images.shape[1:] != (64, 64, 3) or len(images) != len(self.factor_space):
      raise errors.DataError(
          f"{path}: expected images of shape ({len(self.factor_space)}, 64, 64, 3) "
          f"for factor sizes {self.factor_space.sizes}, found {images.shape}")
    self.images = images
    self.image_shape = (resolution, resolution, 3)

  def __len__(self):
    return len(self.images)

  def __getitem__(self, index):
    index = self._check_index(index)
    return {"image": resize(np.asarray(self.images[index]), self.resolution),
            "factors": self.factors_of(index)}


class Cars3D(Source):
  """Cars3D: 4 elevations x 24 azimuths x 183 cars, 128 x 128 RGB, read from the
  per-car .mat files (array `im`; its 24- and 4-long axes are azimuth and
  elevation). Index = row-major over (elevation, azimuth, object), the
  disentanglement_lib factor order; cars are numbered in sorted file order."""

  def __init__(self, data_dir: str, *, resolution: int = 64, channels: int = 3,
               cache_mb: float = 256):
    self.name, self.resolution = "cars3d", resolution
    check_channels(self.name, channels, (3,))
    if not data_dir or not os.path.isdir(data_dir):
      raise DatasetNotFoundError(f"cars3d: directory {data_dir!r} does not exist. "
                                 + _CARS3D_HOWTO)
    self.files = sorted(glob.glob(os.path.join(data_dir, "*.mat")))
    if not self.files:
      raise DatasetNotFoundError(f"cars3d: no .mat files in {data_dir!r}. " + _CARS3D_HOWTO)
    self.native = self._load_car(0).shape[2]
    check_resolution(self.name, resolution, self.native)
    self.factor_space = FactorSpace(CARS3D_NAMES, (4, 24, len(self.files)))
    self.image_shape = (resolution, resolution, 3)
    self.cache = ImageCache(int(cache_mb * 2**20))

  def _load_car(self, car: int) -> np.ndarray:
    """-> [4 elevations, 24 azimuths, H, W, 3] uint8."""
    import scipy.io  # pylint: disable=import-outside-toplevel
    path = self.files[car]
    try:
      im = np.asarray(scipy.io.loadmat(path)["im"])
    except (OSError, ValueError, KeyError) as error:
      raise errors.DataError(f"cars3d: cannot read array 'im' from {path}: {error!r}") from error
    sizes = list(im.shape)
    if im.ndim != 5 or sorted(sizes[3:]) != [4, 24] or sizes[2] != 3:
      raise errors.DataError(f"cars3d: {path} holds 'im' of shape {im.shape}; expected "
                             "(H, W, 3, 24, 4) or (H, W, 3, 4, 24)")
    elevation_axis = 3 + sizes[3:].index(4)
    azimuth_axis = 3 + sizes[3:].index(24)
    return np.ascontiguousarray(
        np.transpose(im, (elevation_axis, azimuth_axis, 0, 1, 2)).astype(np.uint8))

  def _car(self, car: int) -> np.ndarray:
    views = self.cache.get(car)
    if views is None:
      views = np.stack([resize(v, self.resolution)
                        for v in self._load_car(car).reshape(-1, self.native, self.native, 3)])
      views = views.reshape((4, 24) + self.image_shape)
      self.cache.put(car, views)
    return views

  def __len__(self):
    return len(self.factor_space)

  def __getitem__(self, index):
    factors = self.factors_of(self._check_index(index))
    elevation, azimuth, car = (int(f) for f in factors)
    return {"image": self._car(car)[elevation, azimuth], "factors": factors}

"""Metric writers: TensorBoard event files on process 0, plain logging everywhere.

Why not `clu.metric_writers`: in clu 0.0.12 (its latest release) importing it
imports TensorFlow, and TensorFlow costs 1.6 GB of install and ~10 s of import
in every process (the test suite starts dozens) just to serialise events. The
`tensorboard` package, which users install anyway to view the curves, writes
the same event files without TensorFlow. These classes keep clu's
`MetricWriter` method names (write_scalars / write_images / write_texts /
write_hparams / flush / close), so code written against clu reads the same.
"""

import contextlib
import glob
import io
import os
import time
from typing import Mapping

from absl import logging
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def _png(image: np.ndarray) -> bytes:
  image = np.asarray(image, np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "PNG")
  return buffer.getvalue()


def _text_value(tag: str, text: str) -> summary_pb2.Summary.Value:
  tensor = tensor_pb2.TensorProto(
      dtype="DT_STRING", string_val=[text.encode()],
      tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[]))
  metadata = summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
  return summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)


class TensorBoardWriter:
  """Writes scalars, images (uint8 H x W x C) and texts as TensorBoard events."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    self._events = EventFileWriter(logdir, flush_secs=30)

  def _write(self, step: int, values):
    self._events.add_event(event_pb2.Event(
        wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    self._write(step, [summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                       for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, np.ndarray]):
    values = []
    for tag, image in images.items():
      height, width, channels = np.shape(image)
      values.append(summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(
          height=height, width=width, colorspace=channels, encoded_image_string=_png(image))))
    self._write(step, values)

  def write_texts(self, step: int, texts: Mapping[str, str]):
    self._write(step, [_text_value(k, v) for k, v in texts.items()])

  def write_hparams(self, hparams: Mapping[str, object]):
    table = "\n".join(f"| {k} | {v} |" for k, v in sorted(hparams.items()))
    self.write_texts(0, {"hparams": "| key | value |\n|---|---|\n" + table})

  def flush(self):
    self._events.flush()

  def close(self):
    self._events.close()


class LoggingWriter:
  """Logs scalars (and the names of images) with absl logging."""

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.6g}" for k, v in scalars.items()))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]):
    logging.info("[%d] images: %s", step, ", ".join(
        f"{k} {np.shape(v)}" for k, v in images.items()))

  def write_texts(self, step: int, texts: Mapping[str, str]):
    for k, v in texts.items():
      logging.info("[%d] %s: %s", step, k, v)

  def write_hparams(self, hparams: Mapping[str, object]):
    logging.info("hparams: %s", dict(hparams))

  def flush(self):
    pass

  def close(self):
    pass


class MultiWriter:
  def __init__(self, writers):
    self._writers = list(writers)

  def __getattr__(self, name):
    def call(*args, **kwargs):
      for w in self._writers:
        getattr(w, name)(*args, **kwargs)
    return call


def create_default_writer(logdir: str, *, just_logging: bool = False) -> MultiWriter:
  """Logging, plus TensorBoard events in `logdir` unless `just_logging`
  (pass `jax.process_index() > 0`, as with clu's function of the same name)."""
  writers = [LoggingWriter()]
  if not just_logging:
    writers.append(TensorBoardWriter(logdir))
  return MultiWriter(writers)


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Every scalar in the event files of `logdir`, as tag -> [(step, value)]
  sorted by step. A step logged twice (a run resumed from a checkpoint before
  it) keeps its latest value."""
  latest: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for record in RawEventFileLoader(path).Load():
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          latest.setdefault(value.tag, {})[event.step] = value.simple_value
  return {tag: sorted(points.items()) for tag, points in latest.items()}


@contextlib.contextmanager
def replacing(path: str):
  """A temporary path next to `path`, moved onto `path` when the block
  completes and removed if it raises: readers (another shard of a study, a
  rerun after a kill or Ctrl-C) see the old file or the whole new one, never
  half of it."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_atomic(path: str, text: str) -> None:
  """Writes the text file `path` through `replacing`."""
  with replacing(path) as tmp, open(tmp, "w") as f:
    f.write(text)

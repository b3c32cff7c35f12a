"""Which ground-truth factor does a traversal change? A small CNN probe,
trained from scratch on the labelled source, predicts every factor of an
image; along each direction's traversal we measure how far each factor's
prediction moves from the source frame's.

- `train_probe(source, ...)`: a 3-layer strided CNN with one softmax head per
  factor (single-valued factors are left out), Adam, cross-entropy; returns
  the probe and its held-out accuracy per factor.
- `factor_response(probe, frames)`: frames [N, K, F, H, W, C] in [-1, 1]
  (F odd, the middle one the unedited source) -> response [K, num_factors]:
  the mean over sources and frames of |p(frame) - p(middle frame)|, where p is
  the predicted factor value E[index] / (size - 1), in [0, 1].
- `summarize(response, names)`: each direction's dominant factor, and the
  concentration sum_k max_f R[k, f] / sum_k sum_f R[k, f] (1: every direction
  moves a single factor).

The probe is our measuring instrument, not a published metric: its numbers
depend on its accuracy, which is reported next to them.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cldis_jax import data


class ProbeNet(nn.Module):
  sizes: tuple[int, ...]
  width: int = 32

  @nn.compact
  def __call__(self, x, features: bool = False):
    """Images (B, H, W, C) in [-1, 1] -> logits (B, sum(sizes)), or with
    `features` the hidden layer's activations (B, 4 * width)."""
    x = x.astype(jnp.float32)
    for i, w in enumerate((self.width, 2 * self.width, 2 * self.width)):
      x = nn.relu(nn.Conv(w, (3, 3), (2, 2), padding=1, name=f"conv{i}")(x))
    x = nn.relu(nn.Dense(4 * self.width, name="hidden")(jnp.mean(x, axis=(1, 2))))
    return x if features else nn.Dense(sum(self.sizes), name="logits")(x)


@dataclasses.dataclass(frozen=True, eq=False)
class Probe:
  net: ProbeNet
  params: dict
  names: tuple[str, ...]
  columns: tuple[int, ...]  # factor columns of the source the heads predict
  accuracy: dict  # held-out accuracy per factor

  def predict(self, images) -> np.ndarray:
    """Images [..., H, W, C] in [-1, 1] -> predicted factor values [..., F] in [0, 1]."""
    images = np.asarray(images)
    flat = images.reshape((-1,) + images.shape[-3:])
    out = _expected(self.net, self.params, jnp.asarray(flat))
    return np.asarray(out).reshape(images.shape[:-3] + (len(self.names),))

  def predict_index(self, images) -> np.ndarray:
    """Images [N, H, W, C] in [-1, 1] -> the most probable value of each factor [N, F]."""
    return np.asarray(_predicted_index(self.net, self.params, jnp.asarray(images)))

  def read(self, images, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Images [N, H, W, C] in [-1, 1] -> {"index" [N, F]: the most probable
    value, "confidence" [N, F]: its probability, "features" [N, 4 width]:
    the hidden layer}, `batch_size` at a time."""
    parts = [_read(self.net, self.params, jnp.asarray(images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def _split(net, logits):
  return jnp.split(logits, np.cumsum(net.sizes)[:-1], axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _expected(net, params, x):
  heads = _split(net, net.apply({"params": params}, x))
  return jnp.stack([jax.nn.softmax(h) @ (jnp.arange(s) / (s - 1.0))
                    for h, s in zip(heads, net.sizes)], axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _predicted_index(net, params, x):
  return jnp.stack([jnp.argmax(h, -1) for h in _split(net, net.apply({"params": params}, x))],
                   axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def _read(net, params, x):
  probs = [jax.nn.softmax(h) for h in _split(net, net.apply({"params": params}, x))]
  return dict(index=jnp.stack([jnp.argmax(p, -1) for p in probs], -1),
              confidence=jnp.stack([jnp.max(p, -1) for p in probs], -1),
              features=net.apply({"params": params}, x, features=True))


def _loss(net, params, x, labels):
  heads = _split(net, net.apply({"params": params}, x))
  return sum(optax.softmax_cross_entropy_with_integer_labels(h, labels[:, i]).mean()
             for i, h in enumerate(heads))


def _batch(source, rows, columns):
  images = data.images_at(source, rows)
  return images, source.factors_of(rows)[:, columns]


def train_probe(source, *, steps: int, batch_size: int = 64, learning_rate: float = 1e-3,
                width: int = 32, test_images: int = 1000, seed: int = 0) -> Probe:
  """A probe of every multi-valued factor of `source`, trained on random rows."""
  space = source.factor_space
  columns = tuple(i for i, s in enumerate(space.sizes) if s > 1)
  net = ProbeNet(tuple(space.sizes[i] for i in columns), width)
  rng = np.random.RandomState(seed)
  x, _ = _batch(source, rng.randint(len(source), size=2), columns)
  params = net.init(jax.random.key(seed), jnp.asarray(x))["params"]
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, labels):
    grads = jax.grad(functools.partial(_loss, net))(params, x, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for _ in range(steps):
    x, labels = _batch(source, rng.randint(len(source), size=batch_size), columns)
    params, opt_state = step(params, opt_state, x, labels)
  test = np.random.RandomState(seed + 1).choice(len(source), min(test_images, len(source)),
                                                replace=False)
  hits = []
  for i in range(0, len(test), 256):
    x, labels = _batch(source, test[i:i + 256], columns)
    hits.append(np.asarray(_predicted_index(net, params, jnp.asarray(x))) == labels)
  hits = np.concatenate(hits)
  names = tuple(space.names[i] for i in columns)
  return Probe(net, params, names, columns,
               {n: float(hits[:, j].mean()) for j, n in enumerate(names)})


def factor_response(probe: Probe, frames) -> np.ndarray:
  """frames [N, K, F, H, W, C] in [-1, 1], F odd (middle = source) -> [K, factors]."""
  frames = np.asarray(frames)
  if frames.ndim != 6 or frames.shape[2] % 2 == 0:
    raise ValueError(f"frames must be [N, K, F odd, H, W, C]; got shape {frames.shape}")
  p = probe.predict(frames)  # [N, K, F, factors]
  centre = p[:, :, frames.shape[2] // 2][:, :, None]
  return np.abs(p - centre).mean(axis=(0, 2))


def summarize(response: np.ndarray, names) -> dict:
  response = np.asarray(response, np.float64)
  total = response.sum()
  return dict(
      response=response.tolist(), factors=list(names),
      dominant=[names[int(i)] for i in response.argmax(axis=1)],
      dominant_share=(response.max(axis=1) / np.maximum(response.sum(axis=1), 1e-12)).tolist(),
      concentration=float(response.max(axis=1).sum() / total) if total > 0 else 0.0)

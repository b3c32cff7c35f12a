"""The beta-VAE co-pilot: the conv encoder/decoder of Burgess et al. (2018).

At 64x64: four 4x4 stride-2 convs with `hidden_channels` (32) channels, two
dense layers of `hidden_dim` (256), then mu and logvar; the decoder mirrors it
with transposed convs. Other power-of-two sizes use log2(size) - 2 stride-2
layers, so the bottleneck is always 4x4. Activations are ReLU.

Methods for `apply(..., method=...)`: `encode`, `reparametrize`, `decode`.
Decoder outputs are logits; `decoded_image` maps them back to [-1, 1].
"""

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from cldis_jax import distributions, errors


def num_stride2_layers(image_size: int) -> int:
  n = int(round(math.log2(image_size))) - 2 if image_size > 0 else -1
  if n < 1 or 4 * 2 ** n != image_size:
    raise errors.ConfigError(f"beta-VAE image_size must be a power of two >= 8, got {image_size}")
  return n


def decoded_image(logits):
  """Decoder logits -> image in [-1, 1] (the mean under either likelihood)."""
  return 2.0 * jax.nn.sigmoid(logits.astype(jnp.float32)) - 1.0


class Encoder(nn.Module):
  latent_dim: int
  hidden_channels: int = 32
  hidden_dim: int = 256
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = x.astype(self.dtype)
    for i in range(num_stride2_layers(x.shape[1])):
      h = nn.relu(nn.Conv(self.hidden_channels, (4, 4), strides=(2, 2),
                          padding=((1, 1), (1, 1)), dtype=self.dtype,
                          name=f"conv_{i}")(h))
    h = h.reshape(h.shape[0], -1)
    for i in range(2):
      h = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype, name=f"fc_{i}")(h))
    out = nn.Dense(2 * self.latent_dim, dtype=jnp.float32, name="out")(h)
    mu, logvar = jnp.split(out.astype(jnp.float32), 2, axis=-1)
    return mu, logvar


class Decoder(nn.Module):
  image_size: int
  out_channels: int = 3
  hidden_channels: int = 32
  hidden_dim: int = 256
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z):
    n = num_stride2_layers(self.image_size)
    h = z.astype(self.dtype)
    for i in range(2):
      h = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype, name=f"fc_{i}")(h))
    h = nn.relu(nn.Dense(self.hidden_channels * 16, dtype=self.dtype, name="fc_2")(h))
    h = h.reshape(h.shape[0], 4, 4, self.hidden_channels)
    for i in range(n):
      last = i == n - 1
      h = nn.ConvTranspose(self.out_channels if last else self.hidden_channels, (4, 4),
                           strides=(2, 2), padding="SAME", dtype=self.dtype,
                           name=f"deconv_{i}")(h)
      if not last:
        h = nn.relu(h)
    return h.astype(jnp.float32)


class BetaVAE(nn.Module):
  image_size: int
  latent_dim: int
  in_channels: int = 3
  hidden_channels: int = 32
  hidden_dim: int = 256
  likelihood: str = "bernoulli"  # or "gaussian"; see distributions.reconstruction_nll
  dtype: str = "float32"

  def setup(self):
    if self.likelihood not in distributions.LIKELIHOODS:
      raise errors.ConfigError(f"unknown beta-VAE likelihood {self.likelihood!r}; "
                               f"valid: {distributions.LIKELIHOODS}")
    num_stride2_layers(self.image_size)
    dt = jnp.dtype(self.dtype)
    self.encoder = Encoder(self.latent_dim, self.hidden_channels, self.hidden_dim, dt)
    self.decoder = Decoder(self.image_size, self.in_channels, self.hidden_channels,
                           self.hidden_dim, dt)

  def encode(self, x):
    """Images (B, H, W, C) in [-1, 1] -> (mu, logvar), each (B, latent_dim)."""
    return self.encoder(x)

  def reparametrize(self, mu, logvar, rng: Optional[jax.Array] = None):
    """A posterior sample; uses `rng` if given, else the 'reparam' rng stream."""
    if rng is None:
      rng = self.make_rng("reparam")
    return distributions.sample_diag_gaussian(rng, mu, logvar)

  def decode(self, z):
    """Latents (B, latent_dim) -> decoder logits (B, H, W, C)."""
    return self.decoder(z)

  def __call__(self, x, rng: Optional[jax.Array] = None):
    """Encode, sample, decode. Returns a dict with per-sample `nll` and `kl`."""
    mu, logvar = self.encode(x)
    z = self.reparametrize(mu, logvar, rng)
    logits = self.decode(z)
    return dict(
        mu=mu, logvar=logvar, z=z, logits=logits,
        nll=distributions.reconstruction_nll(logits, x, self.likelihood),
        kl=distributions.kl_standard_normal(mu, logvar))

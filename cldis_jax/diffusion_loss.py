"""The denoiser's training loss: what it predicts, how much each timestep
counts, and how often each timestep is drawn (`config.diffusion`).

Every recipe is a weight on the error in x0 space. With SNR_t = abar_t / (1 -
abar_t), the plain MSE of each prediction is

  eps: SNR_t |x0 - x0_hat|^2      v: (SNR_t + 1) |x0 - x0_hat|^2      x0: |x0 - x0_hat|^2

and `loss_weight` replaces that x0-space weight by

  "none"           the prediction's own (the official Diff-AE loss with eps)
  "p2"             SNR_t / (k + SNR_t)^gamma  (Choi et al. 2022: eps-MSE / (k + SNR)^gamma)
  "min_snr"        min(SNR_t, gamma)          (Hang et al. 2023, Min-SNR-gamma)
  "truncated_snr"  max(SNR_t, 1)              (the same paper's for x0 targets)

so the loss of one image is `table[t] * MSE(output, target)` with `table` the
new weight over the prediction's own. P2 and min-SNR lower the weight of the
low-noise steps; only "v", "x0" and "truncated_snr" raise the weight of the
high-noise steps (SNR < 1), where a region's colour is no longer readable in
x_t and only the semantic code can supply it (docs/autoencoding.md).

Timesteps are drawn uniformly ("uniform") or, with "high", a share
`high_noise_share` of them uniformly from [high_noise_from, T); with
`importance` each image's loss is multiplied by p_uniform(t) / p(t), so the
expected loss is the uniform one (only the variance changes).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import diffusion, errors

LOSS_WEIGHTS = ("none", "p2", "min_snr", "truncated_snr")
TIMESTEPS = ("uniform", "high")


class Settings(NamedTuple):
  """The loss settings of config.diffusion (hashable: a static argument)."""
  loss_weight: str = "none"
  p2_k: float = 1.0
  p2_gamma: float = 1.0
  min_snr_gamma: float = 5.0
  timesteps: str = "uniform"
  high_noise_from: int = 700
  high_noise_share: float = 0.5
  importance: bool = False


def settings(diffusion_config) -> Settings:
  """Settings from config.diffusion (its defaults where a key is missing)."""
  return Settings(**{k: type(v)(diffusion_config.get(k, v))
                     for k, v in Settings()._asdict().items()})


def check(config) -> None:
  """config.diffusion: a known prediction, weight and timestep draw, in range."""
  d = config.diffusion
  if d.prediction not in diffusion.PREDICTIONS:
    raise errors.ConfigError(f"diffusion.prediction = {d.prediction!r}; valid: "
                             f"{', '.join(diffusion.PREDICTIONS)}")
  s = settings(d)
  if s.loss_weight not in LOSS_WEIGHTS:
    raise errors.ConfigError(f"diffusion.loss_weight = {s.loss_weight!r}; valid: "
                             f"{', '.join(LOSS_WEIGHTS)}")
  if s.timesteps not in TIMESTEPS:
    raise errors.ConfigError(f"diffusion.timesteps = {s.timesteps!r}; valid: "
                             f"{', '.join(TIMESTEPS)}")
  for key in ("p2_k", "p2_gamma", "min_snr_gamma"):
    if not getattr(s, key) > 0:
      raise errors.ConfigError(f"diffusion.{key} = {getattr(s, key)!r}; valid: a number > 0")
  if not 0 <= s.high_noise_from < d.num_timesteps:
    raise errors.ConfigError(f"diffusion.high_noise_from = {s.high_noise_from!r}; valid: 0 to "
                             f"{d.num_timesteps - 1} (diffusion.num_timesteps - 1)")
  if not 0 <= s.high_noise_share <= 1:
    raise errors.ConfigError(f"diffusion.high_noise_share = {s.high_noise_share!r}; valid: "
                             f"0 to 1")


def own_x0_weight(prediction: str, snr: np.ndarray) -> np.ndarray:
  """The x0-space weight of the prediction's plain MSE."""
  return {"eps": snr, "v": snr + 1.0, "x0": np.ones_like(snr)}[prediction]


def x0_weight(s: Settings, prediction: str, snr: np.ndarray) -> np.ndarray:
  """The recipe's weight on the x0-space error per step (float64)."""
  if s.loss_weight == "p2":
    return snr / (s.p2_k + snr) ** s.p2_gamma
  if s.loss_weight == "min_snr":
    return np.minimum(snr, s.min_snr_gamma)
  if s.loss_weight == "truncated_snr":
    return np.maximum(snr, 1.0)
  return own_x0_weight(prediction, snr)


def loss_table(process: diffusion.Diffusion, s: Settings) -> np.ndarray:
  """Per step, the factor on the prediction's MSE (float64; 1 with "none")."""
  snr = process.snr()
  return x0_weight(s, process.prediction, snr) / own_x0_weight(process.prediction, snr)


def timestep_probabilities(s: Settings, num_timesteps: int) -> np.ndarray:
  """p(t) of the draw (float64, sums to 1)."""
  p = np.full(num_timesteps, 1.0 / num_timesteps)
  if s.timesteps == "high":
    high = np.arange(num_timesteps) >= s.high_noise_from
    p = (1.0 - s.high_noise_share) * p + s.high_noise_share * high / high.sum()
  return p


def draw_timesteps(s: Settings, num_timesteps: int, batch: int, rng):
  """(t (B,) int32, weight (B,) float32): the draw and, with `importance`,
  p_uniform(t) / p(t) (else ones)."""
  k_pick, k_low, k_high = jax.random.split(rng, 3)
  t = jax.random.randint(k_low, (batch,), 0, num_timesteps)
  if s.timesteps == "high":
    high = jax.random.randint(k_high, (batch,), s.high_noise_from, num_timesteps)
    t = jnp.where(jax.random.uniform(k_pick, (batch,)) < s.high_noise_share, high, t)
  if not s.importance:
    return t, jnp.ones((batch,), jnp.float32)
  ratio = (1.0 / num_timesteps) / timestep_probabilities(s, num_timesteps)
  return t, jnp.asarray(ratio.astype(np.float32))[t]


def inputs(process: diffusion.Diffusion, s: Settings, x0, rng):
  """(t, eps, x_t, per-image weight) for one batch: the draw of `s`, eps ~ N(0, I)."""
  k_t, k_eps = jax.random.split(rng)
  if s.timesteps == "uniform":  # the draws of the official loss, bit for bit
    t = jax.random.randint(k_t, (x0.shape[0],), 0, process.num_timesteps)
    weight = jnp.ones((x0.shape[0],), jnp.float32)
  else:
    t, weight = draw_timesteps(s, process.num_timesteps, x0.shape[0], k_t)
  eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
  return t, eps, process.q_sample(x0, t, eps), weight


def per_image_loss(process: diffusion.Diffusion, s: Settings, out, x0, eps, t, weight):
  """(B,) the weighted MSE between the denoiser's output and its target."""
  mse = diffusion.eps_mse(out, process.target(x0, eps, t))
  if s.loss_weight == "none":
    return weight * mse
  table = jnp.asarray(loss_table(process, s).astype(np.float32))
  return weight * table[t] * mse

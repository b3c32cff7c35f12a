"""Gaussian diffusion: schedules, q_sample, "ddimN" timestep spacing, DDIM
sampling and DDIM inversion, for a denoiser that predicts eps (Diff-AE's),
v = sqrt(abar) eps - sqrt(1 - abar) x0, or x0 itself (`prediction`).

Follows the official Diff-AE code (phizaz/diffae `diffusion/base.py`,
`diffusion/diffusion.py`). Tables are computed in float64 with numpy and every
per-step coefficient is cast to float32 before use, as the official
`_extract_into_tensor` does; with that, DDIM sampling matches the official
sampler bit for bit.

The samplers take `model_fn(x, t)`, the denoiser's output (of the process's
`prediction`), where `t` is a (B,) int32 array of **original** timesteps
(0..T-1), and run as a `lax.scan`, so a jitted caller compiles once per step
count. `process(config.diffusion, steps)` is how the package builds every
process: one object per setting, so jitted functions that take a process as a
static argument compile once per setting. A process also carries the
classifier-free `guidance` scale its decoders apply (1: none).
"""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import errors

# What the denoiser outputs: eps (Diff-AE, DDPM), v (Salimans & Ho 2022) or x0.
PREDICTIONS = ("eps", "v", "x0")


def beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
  """'linear' (1e-4..0.02, scaled by 1000/T) or 'constX' (every beta = X), float64."""
  if name == "linear":
    scale = 1000 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
  match = re.fullmatch(r"const([0-9.eE+-]+)", name)
  if match:
    return np.full(num_timesteps, float(match.group(1)), dtype=np.float64)
  raise errors.ConfigError(f"unknown beta schedule {name!r}; valid: 'linear' or 'constX' "
                           f"(e.g. 'const0.008')")


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
  """The "ddimN" spacing: {0, s, 2s, ...} with the smallest stride s giving N steps."""
  if num_steps == num_timesteps:
    return np.arange(num_timesteps)
  for stride in range(1, num_timesteps):
    kept = np.arange(0, num_timesteps, stride)
    if len(kept) == num_steps:
      return kept
  raise errors.ConfigError(f"cannot take exactly {num_steps} evenly strided DDIM steps out of "
                           f"{num_timesteps} timesteps")


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: arrays can't be hashed
class Diffusion:
  """A (possibly respaced) diffusion process, with float64 tables.

  `timesteps[k]` is the original timestep of step k; `alphas_cumprod[k]` is
  alpha-bar at that timestep. The full process has timesteps = 0..T-1.
  """
  timesteps: np.ndarray
  alphas_cumprod: np.ndarray
  prediction: str = "eps"
  guidance: float = 1.0  # decoders: eps(null) + guidance * (eps(code) - eps(null))

  @classmethod
  def create(cls, beta_schedule_name: str = "linear", num_timesteps: int = 1000,
             prediction: str = "eps", guidance: float = 1.0):
    if prediction not in PREDICTIONS:
      raise errors.ConfigError(f"diffusion.prediction = {prediction!r}; valid: "
                               f"{', '.join(PREDICTIONS)}")
    betas = beta_schedule(beta_schedule_name, num_timesteps)
    return cls(np.arange(num_timesteps), np.cumprod(1.0 - betas), prediction, guidance)

  @property
  def num_timesteps(self) -> int:
    return len(self.timesteps)

  def respace(self, num_steps: int) -> "Diffusion":
    """The "ddim{num_steps}" process: betas recomputed from alpha-bar at kept steps."""
    kept = ddim_timesteps(self.num_timesteps, num_steps)
    abar = self.alphas_cumprod[kept]
    betas = 1.0 - abar / np.concatenate([[1.0], abar[:-1]])
    return dataclasses.replace(self, timesteps=self.timesteps[kept],
                               alphas_cumprod=np.cumprod(1.0 - betas))

  def descending_from(self, t_start: float, num_steps: int) -> "Diffusion":
    """`num_steps` evenly spaced timesteps ending at round(t_start * (T - 1)),
    the last of them first in sampling (1 step: one x0 prediction from there)."""
    top = int(round(t_start * (self.num_timesteps - 1)))
    if not 1 <= num_steps <= top:
      raise errors.ConfigError(f"{num_steps} DDIM steps do not fit below timestep {top} "
                               f"(t_start={t_start}); valid: 1 to {top}")
    kept = np.round(np.arange(1, num_steps + 1) * top / num_steps).astype(np.int64)
    return dataclasses.replace(self, timesteps=self.timesteps[kept],
                               alphas_cumprod=self.alphas_cumprod[kept])

  @property
  def alphas_cumprod_prev(self):
    return np.concatenate([[1.0], self.alphas_cumprod[:-1]])

  @property
  def alphas_cumprod_next(self):
    return np.concatenate([self.alphas_cumprod[1:], [0.0]])

  def q_sample(self, x0, t, noise):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, for step indices t (B,)."""
    a = _bcast(_f32(np.sqrt(self.alphas_cumprod))[t], x0)
    s = _bcast(_f32(np.sqrt(1.0 - self.alphas_cumprod))[t], x0)
    return a * x0 + s * noise

  def predict_x0(self, x_t, t, eps):
    """x0 = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps, for step indices t (B,)."""
    r = _bcast(_f32(np.sqrt(1.0 / self.alphas_cumprod))[t], x_t)
    rm1 = _bcast(_f32(np.sqrt(1.0 / self.alphas_cumprod - 1.0))[t], x_t)
    return r * x_t - rm1 * eps

  def snr(self) -> np.ndarray:
    """abar / (1 - abar) per step (float64): the signal-to-noise ratio of x_t."""
    return self.alphas_cumprod / (1.0 - self.alphas_cumprod)

  def target(self, x0, eps, t):
    """What the denoiser learns to output at step indices t (B,): eps, v or x0."""
    if self.prediction == "eps":
      return eps
    if self.prediction == "x0":
      return x0
    a = _bcast(_f32(np.sqrt(self.alphas_cumprod))[t], x0)
    s = _bcast(_f32(np.sqrt(1.0 - self.alphas_cumprod))[t], x0)
    return a * eps - s * x0

  def eps_from(self, x_t, t, out):
    """eps implied by the denoiser's output `out` at step indices t (B,)."""
    if self.prediction == "eps":
      return out
    row = jax.tree.map(lambda a: _bcast(a[t], x_t), self._ddim_step_tables())
    return _eps_of(self.prediction, x_t, out, row)

  def elbo_weights(self):
    """w_t (float32, per step index) with which the eps error enters the
    variational bound: L_{t-1} = w_t ||eps - eps_theta||^2 summed over pixels,
    w_t = beta_t / (2 alpha_t (1 - abar_t)) (reverse variance beta_t)."""
    betas = 1.0 - self.alphas_cumprod / self.alphas_cumprod_prev
    return _f32(betas / (2.0 * (1.0 - betas) * (1.0 - self.alphas_cumprod)))

  def _ddim_step_tables(self):
    return dict(
        t=jnp.asarray(self.timesteps, jnp.int32),
        recip=_f32(np.sqrt(1.0 / self.alphas_cumprod)),
        recipm1=_f32(np.sqrt(1.0 / self.alphas_cumprod - 1.0)),
        sqrt_a=_f32(np.sqrt(self.alphas_cumprod)),
        sqrt_1ma=_f32(np.sqrt(1.0 - self.alphas_cumprod)),
        prev=_f32(self.alphas_cumprod_prev),
        next=_f32(self.alphas_cumprod_next),
    )

  def ddim_sample(self, model_fn, x_T, *, clip: bool = True, unroll: bool = False):
    """Deterministic DDIM (eta = 0) from x_T through every step of this process.

    Call on a respaced process: `diffusion.respace(20).ddim_sample(...)`.
    `unroll=True` traces a Python loop instead of a `lax.scan` (for a few
    steps inside a gradient: the navigation decoder).
    """
    return self._ddim_scan(model_fn, x_T, toward="prev", clip=clip, unroll=unroll)

  def ddim_invert(self, model_fn, x0, *, clip: bool = True):
    """DDIM inversion of clean x0 to the stochastic code x_T (last step: next abar 0)."""
    return self._ddim_scan(model_fn, x0, toward="next", clip=clip)

  def _ddim_scan(self, model_fn, x, *, toward, clip, unroll=False):
    """One DDIM pass: steps in reverse toward abar_prev (sampling) or in order
    toward abar_next (inversion). x0 is clipped and eps re-derived from it."""
    tables = self._ddim_step_tables()
    if toward == "prev":
      tables = jax.tree.map(lambda a: a[::-1], tables)

    def step(x, row):
      out = model_fn(x, jnp.full((x.shape[0],), row["t"], jnp.int32))
      x0 = _x0_of(self.prediction, x, out, row)
      if clip:
        x0 = jnp.clip(x0, -1.0, 1.0)
      eps = (row["recip"] * x - x0) / row["recipm1"]
      a = row[toward]
      return x0 * jnp.sqrt(a) + jnp.sqrt(1.0 - a) * eps, None

    x = x.astype(jnp.float32)
    if unroll:  # a traced Python loop: differentiating it is ~4x faster on XLA:CPU
      for k in range(len(self.timesteps)):
        x, _ = step(x, jax.tree.map(lambda a, k=k: a[k], tables))
      return x
    x, _ = jax.lax.scan(step, x, tables)
    return x


def process(diffusion_config, steps: int | None = None, *, t_start: float | None = None,
            guidance: float = 1.0) -> Diffusion:
  """The process of `config.diffusion`: the full T steps (training), its
  "ddim{steps}" respacing (sampling, inversion), or with `t_start`
  `Diffusion.descending_from(t_start, steps)` (navigation's decoder), its
  decoders guided at `guidance`. Cached by value: the same setting gives the
  same object. A section without `prediction` (the latent DDIM's) predicts eps."""
  return _process(diffusion_config.beta_schedule, int(diffusion_config.num_timesteps),
                  None if steps is None else int(steps),
                  None if t_start is None else float(t_start),
                  diffusion_config.get("prediction", "eps"), float(guidance))


def _x0_of(prediction, x_t, out, row):
  """x0 from the denoiser's output at one step (`row`: that step's tables,
  broadcastable against x_t); for eps, exactly the official predict_x0."""
  if prediction == "eps":
    return row["recip"] * x_t - row["recipm1"] * out
  if prediction == "x0":
    return out
  return row["sqrt_a"] * x_t - row["sqrt_1ma"] * out  # v


def _eps_of(prediction, x_t, out, row):
  """eps from the denoiser's output at one step (see `_x0_of`)."""
  if prediction == "eps":
    return out
  if prediction == "x0":
    return (row["recip"] * x_t - out) / row["recipm1"]
  return row["sqrt_1ma"] * x_t + row["sqrt_a"] * out  # v


@functools.lru_cache(maxsize=32)
def _process(beta_schedule_name: str, num_timesteps: int, steps, t_start, prediction,
             guidance) -> Diffusion:
  full = Diffusion.create(beta_schedule_name, num_timesteps, prediction, guidance)
  if steps is None:
    return full
  return full.respace(steps) if t_start is None else full.descending_from(t_start, steps)


def _f32(table):
  """A float64 table cast to float32, the dtype the official code extracts."""
  return jnp.asarray(np.asarray(table, np.float64).astype(np.float32))


def _bcast(v, like):
  return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def eps_mse(eps_pred, eps):
  """Per-sample mean squared error over every non-batch axis, (B,)."""
  err = jnp.square(eps_pred.astype(jnp.float32) - eps.astype(jnp.float32))
  return jnp.mean(err.reshape(err.shape[0], -1), axis=-1)

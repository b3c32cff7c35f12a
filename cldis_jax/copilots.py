"""The co-pilot's objective: any of disentanglement_lib's six VAEs
(`model.copilot`), each exactly as the library's
`methods/unsupervised/vae.py` computes it, and what the feedback link moves
for each (docs/copilots.md).

Every co-pilot's loss is Rec + regulariser, Rec the per-image reconstruction
loss (summed over pixels) and KL the posterior's KL to N(0, I) (summed over
dims), both batch means, as in the library's `BaseVAE`:

- beta_vae:     beta * KL
- beta_tcvae:   KL + (beta - 1) * TC, TC the minibatch-weighted estimate
                (`total_correlation`)
- factor_vae:   KL + gamma * TC, TC read off a discriminator on z against z
                with each dim shuffled across the batch (`discriminator_tc`);
                the discriminator trains every step on its own loss
                (`discriminator_loss`) with its own Adam
- dip_vae_i:    KL + lambda_od * sum_{i != j} M_ij^2 + lambda_d * sum_i (M_ii - 1)^2,
                M the batch covariance of the means; dip_vae_ii adds the
                mean posterior variance to M's diagonal
- annealed_vae: gamma * |KL - C|, C ramping linearly to c_max

The controller's value (`ControllerState.beta`) is the co-pilot's own
pressure: beta, gamma, lambda_od, or for the AnnealedVAE the capacity, which
works the other way (a higher C is less pressure; `Copilot.sign`). Its range
and gains default to each co-pilot's (`TABLE`) where the config leaves them
at None.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import errors


class Copilot(NamedTuple):
  pressure: str         # what the controller's value is for this co-pilot
  grid: tuple           # Locatello et al.'s values of it (disentanglement_lib's sweep)
  controller: dict      # default beta_init, beta_min, beta_max, kp, ki of the controller
  sign: int = 1         # -1: the value is a capacity (raising it lowers the pressure)
  discriminator: bool = False  # trains FactorVAE's discriminator beside the VAE


def _range(init, low, high):
  """A controller range with the beta-VAE's gains scaled to its width
  (kp = 0.01, ki = 0.001 over beta in [1, 8])."""
  scale = (high - low) / 7.0
  return dict(beta_init=float(init), beta_min=float(low), beta_max=float(high),
              kp=0.01 * scale, ki=0.001 * scale)


TABLE = {
    "beta_vae": Copilot("beta", (1, 2, 4, 6, 8, 16), _range(1, 1, 8)),
    "beta_tcvae": Copilot("beta", (1, 2, 4, 6, 8, 10), _range(1, 1, 10)),
    "factor_vae": Copilot("gamma", (10, 20, 30, 40, 50, 100), _range(10, 10, 100),
                          discriminator=True),
    "dip_vae_i": Copilot("lambda_od", (1, 2, 5, 10, 20, 50), _range(1, 1, 50)),
    "dip_vae_ii": Copilot("lambda_od", (1, 2, 5, 10, 20, 50), _range(1, 1, 50)),
    "annealed_vae": Copilot("c_max", (5, 10, 25, 50, 75, 100), _range(0, 0, 100), sign=-1),
}
COPILOTS = tuple(TABLE)
# disentanglement_lib's lambda_d_factor: lambda_d = factor * lambda_od.
LAMBDA_D_FACTOR = {"dip_vae_i": 10.0, "dip_vae_ii": 1.0}
CONTROLLER_KEYS = ("beta_init", "beta_min", "beta_max", "kp", "ki")


class Settings(NamedTuple):
  """What the loss needs of the co-pilot (static: hashed into the step)."""
  kind: str = "beta_vae"
  lambda_d_factor: float = 0.0
  gamma: float = 1000.0       # annealed_vae's weight on |KL - C|
  anneal_steps: int = 1       # annealed_vae, open loop: steps to reach c_max
  open_loop: bool = True      # annealed_vae: C = anneal(value, step) (else C = value)


def check_kind(kind: str) -> Copilot:
  if kind not in TABLE:
    raise errors.ConfigError(f"model.copilot = {kind!r} is not a co-pilot; valid: "
                             f"{', '.join(COPILOTS)}")
  return TABLE[kind]


def has_discriminator(kind: str) -> bool:
  """Whether co-pilot `kind` trains a discriminator (its own parameters,
  optimizer and loss term)."""
  return check_kind(kind).discriminator


def settings(config) -> Settings:
  """config -> the loss's Settings: library defaults filled in (lambda_d_factor
  0: the library's for that DIP; anneal_steps 0: a third of the run, as the
  library's 100,000 of 300,000 steps)."""
  kind = config.model.copilot
  check_kind(kind)
  s = config.objective.copilot
  factor = s.lambda_d_factor or LAMBDA_D_FACTOR.get(kind, 0.0)
  steps = s.anneal_steps or max(config.train.num_steps // 3, 1)
  return Settings(kind=kind, lambda_d_factor=float(factor), gamma=float(s.gamma),
                  anneal_steps=int(steps),
                  open_loop=config.objective.controller.kind == "constant")


def controller_config(controller, kind: str):
  """A copy of config.objective.controller with the range and gains the
  config leaves at None set to the co-pilot's defaults (TABLE)."""
  c = controller.copy_and_resolve_references()
  defaults = check_kind(kind).controller
  with c.unlocked():
    for key in CONTROLLER_KEYS:
      if c.get(key) is None:
        c[key] = defaults[key]
  return c


def with_controller(config):
  """A copy of `config` with the controller's None keys resolved (configs
  written before the co-pilots hold numbers there: the same run reads the
  same)."""
  out = config.copy_and_resolve_references()
  kind = out.model.get("copilot", "beta_vae")
  out.objective.controller = controller_config(out.objective.controller, kind)
  return out


# ---- the regularisers, as disentanglement_lib computes them ----

def gaussian_log_density(samples, mean, logvar):
  """log N(samples; mean, exp(logvar)) per element."""
  return -0.5 * (jnp.square(samples - mean) * jnp.exp(-logvar) + logvar + np.log(2 * np.pi))


def total_correlation(z, mu, logvar):
  """beta-TCVAE's minibatch-weighted TC estimate, one sample per image, the
  i = j term included and the constant (d - 1) log(B N) dropped:
  E_j[log q(z_j) - sum_l log q(z_jl)], with q(z_j) ~ sum_i q(z_j | x_i)."""
  log_q = gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])  # (j, i, l)
  log_qz = jax.nn.logsumexp(jnp.sum(log_q, axis=2), axis=1)
  log_qz_product = jnp.sum(jax.nn.logsumexp(log_q, axis=1), axis=1)
  return jnp.mean(log_qz - log_qz_product)


def covariance_of_means(mu):
  """E_b[mu mu^T] - E_b[mu] E_b[mu]^T: the biased batch covariance."""
  mean = jnp.mean(mu, axis=0)
  return jnp.mean(mu[:, :, None] * mu[:, None, :], axis=0) - mean[:, None] * mean[None, :]


def dip_covariance(mu, logvar, kind: str):
  """DIP-VAE's M: Cov(mu) (I), plus E_b[diag(exp(logvar))] (II)."""
  cov = covariance_of_means(mu)
  if kind == "dip_vae_ii":
    cov = cov + jnp.diag(jnp.mean(jnp.exp(logvar), axis=0))
  return cov


def dip_penalty(cov, lambda_od, lambda_d):
  """lambda_od * sum of squared off-diagonal entries + lambda_d * sum of
  squared deviations of the diagonal from 1."""
  diag = jnp.diagonal(cov)
  off = cov - jnp.diag(diag)
  return lambda_od * jnp.sum(jnp.square(off)) + lambda_d * jnp.sum(jnp.square(diag - 1.0))


def anneal(c_max, step, steps: int):
  """AnnealedVAE's capacity: min(c_max, c_max * step / steps)."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(c_max * 1.0, c_max * step / steps)


def shuffle_codes(z, rng):
  """Each dim permuted on its own across the batch (FactorVAE's samples of
  prod_l q(z_l)): every column keeps its values, the rows are recombined."""
  keys = jax.random.split(rng, z.shape[1])
  return jax.vmap(jax.random.permutation, in_axes=(0, 1), out_axes=1)(keys, z)


def discriminator_tc(logits):
  """FactorVAE's TC: E[logit(real) - logit(shuffled)] of the discriminator on z."""
  return jnp.mean(logits[:, 0] - logits[:, 1])


def discriminator_loss(logits_real, logits_shuffled):
  """The discriminator's loss: -(0.5 E log p(real | z) + 0.5 E log p(shuffled |
  z_shuffled)), probabilities clipped to [1e-6, 1 - 1e-6] as the library does."""
  p_real = jnp.clip(jax.nn.softmax(logits_real), 1e-6, 1 - 1e-6)
  p_shuffled = jnp.clip(jax.nn.softmax(logits_shuffled), 1e-6, 1 - 1e-6)
  return -(0.5 * jnp.mean(jnp.log(p_real[:, 0])) + 0.5 * jnp.mean(jnp.log(p_shuffled[:, 1])))


def regulariser(s: Settings, value, kl, vae, step, tc=None):
  """(the co-pilot's regulariser, its extra logged terms) for batch-mean `kl`,
  the VAE's outputs (mu, logvar, z), the controller's `value` and the step;
  `tc` is the discriminator's TC for factor_vae."""
  if s.kind == "beta_vae":
    return value * kl, {}
  if s.kind == "beta_tcvae":
    tc = total_correlation(vae["z"], vae["mu"], vae["logvar"])
    return kl + (value - 1.0) * tc, {"vae_tc": tc}
  if s.kind == "factor_vae":
    return kl + value * tc, {"vae_tc": tc}
  if s.kind in ("dip_vae_i", "dip_vae_ii"):
    cov = dip_covariance(vae["mu"], vae["logvar"], s.kind)
    dip = dip_penalty(cov, value, s.lambda_d_factor * value)
    return kl + dip, {"vae_dip": dip}
  if s.kind == "annealed_vae":
    capacity = anneal(value, step, s.anneal_steps) if s.open_loop else value
    return s.gamma * jnp.abs(kl - capacity), {"vae_capacity": jnp.asarray(capacity, jnp.float32)}
  raise errors.ConfigError(f"co-pilot {s.kind!r}; valid: {', '.join(COPILOTS)}")


def copilot_loss(models, params, s: Settings, vae, value, step, rng):
  """(Rec + regulariser, the discriminator's loss (0 without one), the
  regulariser's logged terms) of one batch through the VAE (`vae`: its
  outputs). The discriminator's loss reaches only its own parameters, and
  the VAE's TC only the VAE's: the two updates of the library's FactorVAE."""
  nll, kl = jnp.mean(vae["nll"]), jnp.mean(vae["kl"])
  tc, loss_discriminator = None, jnp.zeros((), jnp.float32)
  if s.kind == "factor_vae":
    apply = lambda p, z: models.discriminator.apply({"params": p}, z)
    weights = params["discriminator"]
    tc = discriminator_tc(apply(jax.lax.stop_gradient(weights), vae["z"]))
    z = jax.lax.stop_gradient(vae["z"])
    # one pass over both batches: the weights are read once (they dominate at small batch)
    logits = apply(weights, jnp.concatenate([z, shuffle_codes(z, rng)]))
    loss_discriminator = discriminator_loss(logits[:len(z)], logits[len(z):])
  reg, terms = regulariser(s, value, kl, vae, step, tc)
  return nll + reg, loss_discriminator, terms


# ---- presets ----

def preset_names() -> list[str]:
  """Every co-pilot in the loop (`<kind>`) and alone at each value of the
  library's grid (`<kind>_<value>`)."""
  return [n for kind, entry in TABLE.items() for n in (kind, *(f"{kind}_{v}" for v in entry.grid))]


def alone(kind: str, value: float) -> dict:
  """Flat overrides: the co-pilot trained alone (no Diff-AE, no link) at a
  fixed `value` of its pressure, scored on its own means."""
  check_kind(kind)
  v = float(value)
  return {"model.copilot": kind, "objective.branches": ("vae",),
          "objective.controller.kind": "constant", "objective.controller.beta_init": v,
          "objective.controller.beta_min": v, "objective.controller.beta_max": v,
          "evaluate.representations": ("vae_mu",)}


# configs/quickstart.py's gains over its beta range [1, 6] (kp 0.01, ki 0.02),
# per unit of range.
QUICKSTART_GAINS = (0.01 / 5, 0.02 / 5)


def in_the_loop(kind: str, kp_per_unit: float = QUICKSTART_GAINS[0],
                ki_per_unit: float = QUICKSTART_GAINS[1]) -> dict:
  """Flat overrides: the co-pilot in CL-Dis's loop over its own range
  (TABLE), with gains given per unit of that range (so that every co-pilot's
  value crosses its range at the same pace)."""
  c = check_kind(kind).controller
  width = c["beta_max"] - c["beta_min"]
  return {"model.copilot": kind,
          **{f"objective.controller.{k}": c[k] for k in ("beta_init", "beta_min", "beta_max")},
          "objective.controller.kp": kp_per_unit * width,
          "objective.controller.ki": ki_per_unit * width}


def preset(name: str) -> dict:
  """A preset's flat overrides (`preset_names`; in the loop with the
  quickstart's gains); ConfigError naming the valid ones otherwise."""
  if name in TABLE:
    return in_the_loop(name)
  kind, _, value = name.rpartition("_")
  if kind in TABLE and value in tuple(str(v) for v in TABLE[kind].grid):
    return alone(kind, float(value))
  raise errors.ConfigError(f"co-pilot preset {name!r}; valid: {', '.join(preset_names())}")

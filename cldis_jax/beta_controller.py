"""The beta controllers of CL-Dis's feedback link: after each step, the
VAE's beta for the next one, from the step's batch means (our reconstruction;
docs/method.md). Pure functions of arrays; `config.objective.controller`.

Controllers (`controller.kind`), all of the ControlVAE PI form. With a
"pressure" u (positive: raise beta):

  P_k = Kp * sigmoid(u_k)            (ControlVAE's Kp / (1 + exp(e_k)), e = -u)
  I_k = clip(I_{k-1} + Ki * u_k, -Kp, beta_max - beta_min)     (anti-windup)
  beta_{k+1} = clip(beta_min + P_k + I_k, beta_min, beta_max)

- "constant": beta = beta_init, always (the open-loop ablation).
- "pi_kl": ControlVAE on the VAE's own KL: u = EMA(KL) - C_k with the set
  point C_k = min(kl_start + kl_step * (k // kl_period), kl_max).
- "diffusion_feedback": u = r* - r_k with r_k = EMA(L_diff) /
  L_diff_ref, the reference being the EMA at the end of the controller's
  warm-up. While the diffusion branch fits better than r* times its reference,
  beta rises; when the distilled constraint hurts the diffusion fit, it falls.
- "diffusion_capacity": u = EMA(KL) - C_k with C_k = capacity * EMA(I_diff),
  I_diff the nats the semantic code saves the denoiser
  (`diffusion_information`), capped at kl_max.
- "distillation_feedback": u = EMA(L_dt) - dt_target: beta rises while the
  Diff-AE's distilled code lags the VAE's, and falls once it has caught up.
- "diffusion_paced" (default): u = EMA(KL) - C_k with the capacity C_k = kl_max *
  clip(1 - EMA(L_diff) / L_diff_ref, 0, 1): the VAE may hold as many nats as
  the share of its initial error the diffusion branch has removed allows
  (Burgess et al.'s capacity, raised by the diffusion branch's progress
  instead of a clock). While the VAE's KL runs ahead of the diffusion branch,
  beta rises; once the capacity has opened past it, beta falls, and it
  settles where KL = C. Its state keeps EMA(L_diff) in `ema` and EMA(KL) in
  `signal`.

ControlVAE freezes its integrator while beta sits below its floor; clamping
the integral to the range beta can actually use does the same at both bounds,
so a long saturation never delays the way back. During the warm-up beta stays
at beta_init. The state enters the loss as a constant and is updated after
it, so no gradient flows through beta.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cldis_jax import errors

CONTROLLERS = ("constant", "pi_kl", "diffusion_feedback", "diffusion_capacity",
               "distillation_feedback", "diffusion_paced")


class ControllerState(NamedTuple):
  """Float32 scalars. `beta` is the value the next step's loss uses."""
  beta: jax.Array
  integral: jax.Array
  ema: jax.Array       # EMA of the measured quantity (L_diff, KL or L_dt)
  # what the set point derives from: L_diff at the end of warm-up
  # (diffusion_feedback), the EMA of the diffusion information (diffusion_capacity)
  reference: jax.Array
  signal: jax.Array    # what the controller compared with its set point
  setpoint: jax.Array
  count: jax.Array     # measurements so far (int32)


def check_controller(c) -> None:
  if c.kind not in CONTROLLERS:
    raise errors.ConfigError(f"objective.controller.kind = {c.kind!r} is not a controller; "
                             f"valid: {', '.join(CONTROLLERS)}")
  if not 0 <= c.beta_min <= c.beta_init <= c.beta_max:
    raise errors.ConfigError(
        "objective.controller needs 0 <= beta_min <= beta_init <= beta_max, got "
        f"beta_min={c.beta_min}, beta_init={c.beta_init}, beta_max={c.beta_max}")
  if not 0 <= c.ema_decay < 1:
    raise errors.ConfigError(f"objective.controller.ema_decay = {c.ema_decay} must be in [0, 1)")


def init_controller(c) -> ControllerState:
  """The state before the first step: beta = beta_init, with the integral set so
  that the PI law with zero pressure also gives beta_init."""
  check_controller(c)
  f = lambda v: jnp.asarray(v, jnp.float32)
  return ControllerState(
      beta=f(c.beta_init), integral=f(c.beta_init - c.beta_min - 0.5 * c.kp),
      ema=f(0.0), reference=f(0.0), signal=f(0.0), setpoint=f(0.0),
      count=jnp.asarray(0, jnp.int32))


def kl_setpoint(c, step):
  """ControlVAE's staircase KL target."""
  return jnp.minimum(c.kl_start + c.kl_step * (step // c.kl_period), c.kl_max).astype(jnp.float32)


MEASURED = {"pi_kl": "kl", "diffusion_capacity": "kl", "diffusion_feedback": "diff_loss",
            "distillation_feedback": "dt_loss", "diffusion_paced": "diff_loss"}


def update_controller(c, state: ControllerState, *, diff_loss, kl, dt_loss=None,
                      diff_info=None, sign: int = 1) -> ControllerState:
  """One controller step from this step's batch means of L_diff, the VAE KL and
  L_dt (and, for diffusion_capacity, the diffusion branch's information in nats).
  `sign` -1: the value is a capacity (AnnealedVAE's), which falls where a
  pressure would rise."""
  if c.kind == "constant":
    return state._replace(count=state.count + 1)
  measured = dict(diff_loss=diff_loss, kl=kl, dt_loss=dt_loss)[MEASURED[c.kind]]
  measured = jnp.asarray(measured, jnp.float32)
  measured = jax.lax.stop_gradient(measured)
  first = state.count == 0
  smooth = lambda old, new: jnp.where(first, new, c.ema_decay * old + (1 - c.ema_decay) * new)
  ema = smooth(state.ema, measured)
  count = state.count + 1
  warm = count <= c.warmup_steps
  if c.kind == "pi_kl":
    active = jnp.bool_(True)
    reference = state.reference
    signal, setpoint = ema, kl_setpoint(c, state.count)
    pressure = signal - setpoint
  elif c.kind == "diffusion_capacity":
    active = ~warm
    reference = smooth(state.reference, jnp.asarray(diff_info, jnp.float32))
    signal = ema
    setpoint = jnp.clip(c.capacity * reference, 0.0, c.kl_max)
    pressure = signal - setpoint
  elif c.kind == "diffusion_paced":
    active = ~warm
    reference = jnp.where(warm, ema, state.reference)
    signal = smooth(state.signal, jnp.asarray(kl, jnp.float32))
    progress = jnp.clip(1.0 - ema / jnp.maximum(reference, 1e-12), 0.0, 1.0)
    setpoint = jnp.where(warm, 0.0, c.kl_max * progress)
    pressure = signal - setpoint
  elif c.kind == "distillation_feedback":
    active = ~warm
    reference = state.reference
    signal, setpoint = ema, jnp.float32(c.dt_target)
    pressure = signal - setpoint
  else:
    reference = jnp.where(warm, ema, state.reference)
    active = ~warm
    signal = ema / jnp.maximum(reference, 1e-12)
    setpoint = jnp.float32(c.setpoint)
    pressure = setpoint - signal
  pressure = sign * pressure
  integral = jnp.clip(state.integral + c.ki * pressure, -c.kp, c.beta_max - c.beta_min)
  beta = jnp.clip(c.beta_min + c.kp * jax.nn.sigmoid(pressure) + integral,
                  c.beta_min, c.beta_max)
  return ControllerState(
      beta=jnp.where(active, beta, state.beta).astype(jnp.float32),
      integral=jnp.where(active, integral, state.integral).astype(jnp.float32),
      ema=ema, reference=reference.astype(jnp.float32), signal=signal.astype(jnp.float32),
      setpoint=jnp.asarray(setpoint, jnp.float32), count=count)

"""CTD, the content-tracking disentanglement score: our label-free metric
(our design; docs/evaluation.md).

The CL-Dis paper describes a label-free metric that tracks content through
latent traversals; its definition is not public. CTD is our design in that
spirit, built from classical dense optical flow (no pretrained networks):

1. For every step a -> b of a traversal (walking outward from the source
   frame), Horn-Schunck flow on luminance, photometric residuals in YCbCr with
   and without motion compensation, and a *motion gate* that accepts flow only
   where it explains the change (so colour edits do not become fake motion).
2. Per pixel, 7 change channels: the accepted flow split by sign and oriented
   along the traversal (x+, x-, y+, y-, weighted so that 1 px at 64 px counts
   like a 0.1 intensity change) and |dY|, |dCb|, |dCr|; box-filtered, minus a
   per-channel noise floor calibrated on null steps (`noise_floor`).
3. The changes are accumulated at the positions the source content has moved
   to (tracking), giving a field F[H, W, 7] per (source, direction).
4. Per direction: consistency C (same kind, strength and extent of change on
   every source), exclusivity X (no other direction changes the same content
   the same way; a direction and its negation overlap completely) and
   preservation P (the change is concentrated in a core, not leaked
   everywhere). S_k = (C X P)^(1/3) for active directions, CTD = mean over
   active ones; every part is reported.

Perfect directions do not score 1 (about 0.85 in the notes' prototype): CTD is
for comparing models and directions on the same data, not an absolute
probability. All settings are `CTDParams` fields (config `evaluate.ctd`).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax.metrics import flow

NUM_CHANNELS = 7
_SWAP = np.array([1, 0, 3, 2, 4, 5, 6])  # exchanges the + and - motion channels
# CTD is thousands of small Jacobi iterations: its run time depends on XLA's
# backend optimisation (20x slower at -O0, which the test suite sets for fast
# model compiles), so its jitted functions ask for full optimisation.
_JIT = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 3})


@dataclasses.dataclass(frozen=True)
class CTDParams:
  levels: int = 3  # Horn-Schunck pyramid levels
  warps: int = 2
  iterations: int = 80
  alpha_hs: float = 0.05  # smoothness, for intensities in [0, 1]
  nu: float = 0.03  # motion gate: change evidence on 3x3 residual sums
  kappa: float = 0.3  # motion must remove this fraction of the residual
  u_min: float = 0.25  # px
  motion_weight: float = 0.1  # lambda_m at 64 px (scaled by 64 / W)
  floor_min: float = 0.004  # smallest noise floor per channel
  floor_percentile: float = 99.5
  rho: float = 0.2  # core: a(p) >= rho * mean of the top q fraction
  q: float = 0.01
  e_min: float = 1e-3  # activity: energy per pixel
  track: bool = True  # False: accumulate on the fixed grid (Eulerian)
  spatial: bool = False  # aligned data: also compare where changes happen
  spatial_sigma: float = 2.0

  @classmethod
  def from_config(cls, config) -> "CTDParams":
    """From `config.evaluate.ctd`, whose traversal settings (num_sources, steps,
    range_sigma) belong to the evaluator, not to the score."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(config).items() if k in fields})


def ycbcr(rgb):
  """[..., 3] RGB in [0, 1] -> YCbCr (ITU-R BT.601, full range, in [0, 1])."""
  m = jnp.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                 [0.5, -0.418688, -0.081312]], jnp.float32)
  return rgb.astype(jnp.float32) @ m.T + jnp.array([0.0, 0.5, 0.5], jnp.float32)


def _box(image, size: int = 3, mean: bool = True):
  """size x size box filter of an [H, W] map, edges replicated."""
  k = np.ones((size, size), np.float32) / (size * size if mean else 1.0)
  return flow.conv_same(image, k)


def _per_channel(fn, image):
  return jnp.stack([fn(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def step_features(a, b, orientation, p: CTDParams):
  """Frames a -> b ([H, W, 3] in [0, 1]) -> (features [H, W, 7] before the
  noise floor, accepted flow [H, W, 2]). `orientation` is +1 on the half of
  the traversal toward positive strengths and -1 on the other."""
  ya, yb = ycbcr(a), ycbcr(b)
  u = flow.hs_flow(ya[..., 0], yb[..., 0], levels=p.levels, warps=p.warps,
                   iterations=p.iterations, alpha=p.alpha_hs)
  ybw = _per_channel(lambda c: flow.warp(c, u), yb)
  r0, rw = jnp.abs(yb - ya), jnp.abs(ybw - ya)
  big_r0 = _box(r0.sum(-1), mean=False)
  big_rw = _box(rw.sum(-1), mean=False)
  changed = big_r0 > p.nu
  explained = big_rw <= (1.0 - p.kappa) * big_r0
  evidence = changed & explained & (jnp.linalg.norm(u, axis=-1) > p.u_min)
  dilated = jax.lax.reduce_window(evidence.astype(jnp.float32), 0.0, jax.lax.max,
                                  (3, 3), (1, 1), "SAME") > 0
  accept = dilated & ~(changed & ~explained)
  u_acc = jnp.where(accept[..., None], u, 0.0)
  m = p.motion_weight * (64.0 / a.shape[1]) * orientation * u_acc
  motion = jnp.stack([jax.nn.relu(m[..., 0]), jax.nn.relu(-m[..., 0]),
                      jax.nn.relu(m[..., 1]), jax.nn.relu(-m[..., 1])], axis=-1)
  photometric = jnp.where(accept[..., None], rw, r0)
  features = _per_channel(_box, jnp.concatenate([motion, photometric], axis=-1))
  return features, u_acc


@functools.partial(_JIT, static_argnums=2)
def _null_features(a, b, p: CTDParams):
  return jax.vmap(lambda x, y: step_features(x, y, 1.0, p)[0])(a, b)


def noise_floor(frames_a, frames_b, p: CTDParams = CTDParams()) -> np.ndarray:
  """Per-channel floor eps_c [7] from *null steps*: pairs [n, H, W, 3] that
  show the same latent (decoded twice with different noise; for a
  deterministic decoder the same frame twice, which gives the minimum)."""
  feats = np.asarray(_null_features(jnp.asarray(frames_a), jnp.asarray(frames_b), p))
  return np.maximum(np.percentile(feats.reshape(-1, NUM_CHANNELS), p.floor_percentile,
                                  axis=0), p.floor_min).astype(np.float32)


def _accumulate_half(frames, orientation, floor, p: CTDParams):
  """frames [S+1, H, W, 3], the source first -> F [H, W, 7], tracking the
  source content's positions."""
  h, w = frames.shape[1:3]
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")

  def step(carry, pair):
    (py, px), total = carry
    feats, u_acc = step_features(pair[0], pair[1], orientation, p)
    feats = jax.nn.relu(feats - floor)
    if p.track:
      at = lambda m: flow.sample(m, py, px)
      total = total + _per_channel(at, feats)
      py, px = py + at(u_acc[..., 1]), px + at(u_acc[..., 0])
    else:
      total = total + feats
    return ((py, px), total), None

  init = ((yy, xx), jnp.zeros((h, w, NUM_CHANNELS), jnp.float32))
  (_, total), _ = jax.lax.scan(step, init, (frames[:-1], frames[1:]))
  return total


def change_field(traversal, floor, p: CTDParams):
  """traversal [2S+1, H, W, 3] (source in the middle) -> F [H, W, 7]."""
  s = traversal.shape[0] // 2
  return (_accumulate_half(traversal[s:], 1.0, floor, p)
          + _accumulate_half(traversal[s::-1], -1.0, floor, p))


def _hi(a, b, axes):
  return jnp.minimum(a, b).sum(axis=axes)


def _blur_normalised(a, sigma):
  blurred = flow.gaussian_blur(a, sigma)
  return blurred / jnp.maximum(blurred.sum(), 1e-12)


def _ratio(x, y):
  return jnp.minimum(x, y) / jnp.maximum(jnp.maximum(x, y), 1e-12)


@functools.partial(_JIT, static_argnums=1)
def scores_from_fields(fields, p: CTDParams):
  """fields [N, K, H, W, 7] -> per-direction C, X, P, S, active, and CTD."""
  n, k, h, w, _ = fields.shape
  hw = h * w
  energy = fields.sum(axis=(2, 3, 4))  # [N, K]
  phi = fields / jnp.maximum(energy, 1e-12)[..., None, None, None]
  hist = phi.sum(axis=(2, 3))  # [N, K, 7]
  amap = fields.sum(-1)  # [N, K, H, W]
  flat = amap.reshape(n, k, hw)
  top = jax.lax.top_k(flat, max(1, int(np.ceil(p.q * hw))))[0].mean(-1)
  core = flat >= p.rho * top[..., None]
  area = core.mean(-1)
  preserved = jnp.where(flat.sum(-1) > 0,
                        (flat * core).sum(-1) / jnp.maximum(flat.sum(-1), 1e-12), 0.0)
  active = (energy / hw > p.e_min).mean(0) >= 0.5  # [K]

  # Consistency over source pairs i < j.
  pair = (_hi(hist[:, None], hist[None, :], -1) * _ratio(energy[:, None], energy[None, :])
          * _ratio(area[:, None], area[None, :]))  # [N, N, K]
  if p.spatial:
    abar = jax.vmap(jax.vmap(lambda m: _blur_normalised(m, p.spatial_sigma)))(amap)
    pair = pair * _hi(abar[:, None], abar[None, :], (-2, -1))
    pair = pair**0.25
  else:
    pair = pair**(1.0 / 3.0)
  upper = jnp.triu(jnp.ones((n, n), bool), 1)[..., None]
  consistency = (pair * upper).sum((0, 1)) / max(1, n * (n - 1) // 2)

  # Exclusivity: overlap with every other active direction (either sign).
  def overlap_with(l):
    other, swapped = phi[:, l][:, None], phi[:, l][:, None][..., _SWAP]
    o = jnp.maximum(_hi(phi, other, (-3, -2, -1)), _hi(phi, swapped, (-3, -2, -1)))
    return o.mean(0)  # [K]

  overlap = jax.lax.map(overlap_with, jnp.arange(k)).T  # [K (this), K (other)]
  valid = active[None, :] & ~jnp.eye(k, dtype=bool)
  exclusivity = 1.0 - jnp.max(jnp.where(valid, overlap, 0.0), axis=1)
  preservation = preserved.mean(0)
  per_direction = jnp.where(active, (consistency * exclusivity * preservation)**(1 / 3), 0.0)
  num_active = active.sum()
  ctd = jnp.where(num_active > 0, per_direction.sum() / jnp.maximum(num_active, 1), 0.0)
  return dict(ctd=ctd, consistency=consistency, exclusivity=exclusivity,
              preservation=preservation, per_direction=per_direction, active=active,
              energy=energy.mean(0))


@functools.partial(_JIT, static_argnums=2)
def change_fields(traversals, floor, p: CTDParams):
  """[N, K, 2S+1, H, W, 3] -> [N, K, H, W, 7] (vmapped over sources, directions)."""
  return jax.vmap(jax.vmap(lambda t: change_field(t, floor, p)))(traversals)


def ctd(traversals, floor=None, p: CTDParams = CTDParams()) -> dict:
  """traversals [N sources, K directions, 2S+1 frames, H, W, 3] in [0, 1], the
  source frame in the middle, the same strengths for every direction.
  `floor`: `noise_floor(...)` ([7]); None uses `p.floor_min` everywhere (right
  for a deterministic decoder). Returns CTD, its parts per direction, and the
  active fraction."""
  traversals = jnp.asarray(traversals, jnp.float32)
  if traversals.ndim != 6 or traversals.shape[-1] != 3 or traversals.shape[2] % 2 != 1:
    raise ValueError("CTD expects traversals [sources, directions, 2S+1 frames, H, W, 3] "
                     f"with an odd number of frames; got {traversals.shape}")
  if traversals.shape[0] < 2:
    raise ValueError("CTD needs at least 2 sources (consistency compares pairs)")
  h, w = traversals.shape[3:5]
  if h % 2**(p.levels - 1) or w % 2**(p.levels - 1):
    raise ValueError(f"CTD: frames of {h}x{w} do not halve {p.levels - 1} times "
                     "(set evaluate.ctd.levels lower or resize the frames)")
  floor = jnp.full((NUM_CHANNELS,), p.floor_min, jnp.float32) if floor is None else (
      jnp.asarray(floor, jnp.float32))
  out = jax.device_get(scores_from_fields(change_fields(traversals, floor, p), p))
  active = np.asarray(out["active"])
  return {"ctd": float(out["ctd"]), "active_fraction": float(active.mean()),
          "consistency": np.asarray(out["consistency"]).tolist(),
          "exclusivity": np.asarray(out["exclusivity"]).tolist(),
          "preservation": np.asarray(out["preservation"]).tolist(),
          "per_direction": np.asarray(out["per_direction"]).tolist(),
          "active": active.tolist(), "energy": np.asarray(out["energy"]).tolist(),
          "noise_floor": np.asarray(floor).tolist()}

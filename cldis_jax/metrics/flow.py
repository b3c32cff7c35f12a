"""Dense optical flow by coarse-to-fine Horn-Schunck, in JAX (for CTD,
`cldis_jax/metrics/ctd.py`).

`hs_flow(ya, yb)` estimates u with yb(p + u(p)) ~ ya(p) for one pair of
[H, W] intensity images in [0, 1]: a Gaussian pyramid (sigma 1, then 2x2
average), at each level `warps` re-linearisations around the current flow,
each solved by Jacobi iterations of the Horn-Schunck equations with the
standard 3x3 averaging stencil; bilinear warping with edge clamping. Flow is
(x, y) in pixels of the finest level. Pure and static-shaped: jit and vmap it.
"""

import jax
import jax.numpy as jnp
import numpy as np

_STENCIL = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]], np.float32) / 12.0


def conv_same(image, kernel):
  """2-D correlation of an [H, W] image with an odd kernel, edges replicated."""
  ky, kx = kernel.shape
  padded = jnp.pad(image, ((ky // 2, ky // 2), (kx // 2, kx // 2)), mode="edge")
  return jax.lax.conv_general_dilated(
      padded[None, None], jnp.asarray(kernel, image.dtype)[None, None], (1, 1),
      "VALID")[0, 0]


def gaussian_blur(image, sigma: float = 1.0):
  radius = int(np.ceil(2 * sigma))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma)**2)
  taps = (taps / taps.sum()).astype(np.float32)
  return conv_same(conv_same(image, taps[None, :]), taps[:, None])


def downsample(image):
  """Blur (sigma 1) then 2x2 average: [H, W] -> [H/2, W/2] (H, W even)."""
  b = gaussian_blur(image)
  h, w = b.shape
  return b.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def sample(image, y, x):
  """Bilinear `image[y, x]` at real positions, clamped to the edge."""
  return jax.scipy.ndimage.map_coordinates(image, [y, x], order=1, mode="nearest")


def warp(image, flow):
  """image(p + flow(p)) for [H, W] image and [H, W, 2] (x, y) flow."""
  h, w = image.shape
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  return sample(image, yy + flow[..., 1], xx + flow[..., 0])


def _gradients(image):
  gx = conv_same(image, np.array([[-0.5, 0.0, 0.5]], np.float32))
  gy = conv_same(image, np.array([[-0.5], [0.0], [0.5]], np.float32))
  return gx, gy


def _refine(ya, yb, flow, alpha: float, iterations: int):
  """One warp: linearise around `flow`, run the Jacobi iterations."""
  ybw = warp(yb, flow)
  gax, gay = _gradients(ya)
  gbx, gby = _gradients(ybw)
  ix, iy, it = 0.5 * (gax + gbx), 0.5 * (gay + gby), ybw - ya
  denom = alpha**2 + ix**2 + iy**2

  def jacobi(_, w):
    mx, my = conv_same(w[..., 0], _STENCIL), conv_same(w[..., 1], _STENCIL)
    r = (it + ix * (mx - flow[..., 0]) + iy * (my - flow[..., 1])) / denom
    return jnp.stack([mx - ix * r, my - iy * r], axis=-1)

  return jax.lax.fori_loop(0, iterations, jacobi, flow)


def hs_flow(ya, yb, *, levels: int = 3, warps: int = 2, iterations: int = 80,
            alpha: float = 0.05):
  """[H, W] x 2 -> [H, W, 2] flow (x, y) with yb(p + u) ~ ya(p)."""
  pyramid = [(ya.astype(jnp.float32), yb.astype(jnp.float32))]
  for _ in range(levels - 1):
    a, b = pyramid[-1]
    pyramid.append((downsample(a), downsample(b)))
  flow = jnp.zeros(pyramid[-1][0].shape + (2,), jnp.float32)
  for level, (a, b) in enumerate(reversed(pyramid)):
    if level:
      flow = 2.0 * jax.image.resize(flow, a.shape + (2,), "bilinear")
    for _ in range(warps):
      flow = _refine(a, b, flow, alpha, iterations)
  return flow

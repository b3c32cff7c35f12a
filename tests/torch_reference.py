"""Diff-AE's latent DDIM as the official PyTorch code computes it, restated
here (the official repository is not a package): what the latent tests and
`benchmarks/latent_sampling_benchmark.py` compare ours against.

torch is passed in, so importing this module needs no torch."""

import math

import numpy as np


def mlp_skip_net(torch, channels, hidden, num_layers, temb_channels):
  """The official module's computation, restated in PyTorch with the
  official key names (time_embed.{0,2}; layers.i.{linear, linear_emb,
  cond_layers.1, norm})."""
  nn = torch.nn

  class Layer(nn.Module):
    def __init__(self, a, b, last):
      super().__init__()
      self.last = last
      self.linear = nn.Linear(a, b)
      if not last:
        self.linear_emb = nn.Linear(channels, b)
        self.cond_layers = nn.Sequential(nn.SiLU(), self.linear_emb)
        self.norm = nn.LayerNorm(b)

    def forward(self, h, temb):
      h = self.linear(h)
      if self.last:
        return h
      return nn.functional.silu(self.norm(h * (1.0 + self.cond_layers(temb))))

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.time_embed = nn.Sequential(nn.Linear(temb_channels, channels), nn.SiLU(),
                                      nn.Linear(channels, channels))
      self.layers = nn.ModuleList(
          [Layer((channels if i == 0 else hidden + channels),
                 channels if i == num_layers - 1 else hidden, i == num_layers - 1)
           for i in range(num_layers)])

    def forward(self, x, t):
      half = temb_channels // 2
      freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
      args = t[:, None].float() * freqs[None]
      temb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))
      h = x
      for i, layer in enumerate(self.layers):
        h = layer(torch.cat([h, x], dim=1) if i else h, temb)
      return h

  return Net()


def ddim_sample(torch, net, noise, alphas_cumprod, timesteps):
  """The official `ddim_sample_loop` (eta 0, no clipping) of `net` from
  `noise`: at each of `timesteps` (the original indices, descending), x0 from
  the predicted eps, eps re-derived from x0 and x, then the DDIM update."""
  abar = [float(alphas_cumprod[t]) for t in timesteps]
  x = noise
  with torch.no_grad():
    for i, t in enumerate(timesteps):
      a, a_prev = abar[i], (abar[i + 1] if i + 1 < len(abar) else 1.0)
      eps = net(x, torch.full((len(x),), int(t), dtype=torch.int64))
      x0 = math.sqrt(1.0 / a) * x - math.sqrt(1.0 / a - 1.0) * eps
      eps = (math.sqrt(1.0 / a) * x - x0) / math.sqrt(1.0 / a - 1.0)
      x = x0 * math.sqrt(a_prev) + math.sqrt(1.0 - a_prev) * eps
  return x


def constant_alphas_cumprod(beta: float = 0.008, num_timesteps: int = 1000) -> np.ndarray:
  """The latent DDIM's schedule: constant betas."""
  return np.cumprod(1.0 - np.full(num_timesteps, beta, np.float64))

"""cldis_jax: CL-Dis (closed-loop unsupervised representation disentanglement) in JAX."""

__version__ = "0.1.0"

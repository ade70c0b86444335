"""Training options, each declared once: the shared loop's, every stage's, and how a run is started.

`TrainConfig` = which stage (`command`), the network (`ModelConfig`), the loop settings shared by every
stage (`LoopConfig`) and the stage's own options (one dataclass per stage below, registered by command).
A stage's reference numbers for the loop (learning rate, betas, EMA decay, batch, steps) are its options
class's `loop_defaults`. `config.json` and every checkpoint hold `TrainConfig.to_json()`.

Adding an option to a stage is one field here (type, default, help: the CLI flag follows) plus its use in
the stage's module under `mmfs/train/stages/` (docs/architecture.md shows an example).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mmfs.config.model import PRESETS, ModelConfig, at_resolution, get_preset
from mmfs.config.options import Options, Rule, check_fields, one_of, option, required
from mmfs.errors import OptionError

# Precisions a new run may ask for: fp16 would need loss scaling. Runs saved before fp32 became the
# default carry "auto" (bf16 autocast on CUDA, fp32 elsewhere), which still resumes as it ran.
TRAIN_DTYPES = ("fp32", "bf16")
LEGACY_TRAIN_DTYPES = ("auto",)
ROSINALITY_EMA = 0.5 ** (32 / 10_000)  # rosinality's accum: an EMA half-life of 10k images at batch 32
PRESET_HELP = f"Network preset ({', '.join(PRESETS)}); default: the config stored in the input file."
CLIP_MODEL_HELP = "open_clip model the mapper reads (OpenAI ViT-B-32 as the reference), local-dir:PATH, or tiny."
CLIP_WEIGHTS_HELP = (
    "Local CLIP weights (open_clip_pytorch_model.bin; with --clip-model tiny a trained tiny CLIP file such as the"
    " demo's); default: open_clip's cache."
)
CLIP_TAG_HELP = (
    "open_clip pretrained tag of the CLIP weights, e.g. openai (the reference's) or laion2b_s34b_b79k; it also"
    " decides QuickGELU for --clip-weights."
)
RESUME = "--resume RUN_DIR"  # a resumed run has its required options in its config
DINO_HELP = "DINO for the structure loss: dino_vitb8 (by name), a local weights file, or tiny."


@dataclass(frozen=True)
class LoopConfig(Options):
    """Settings of the shared loop; the numbers a stage overrides come from its options' `loop_defaults`."""

    steps: int = option(1000, "Optimizer steps in total.", min=1)
    batch_size: int = option(8, "Images per step over all GPUs and micro-batches.", min=1)
    accum: int = option(1, "Gradient accumulation: micro-batches per step.", min=1)
    lr: float = option(2e-4, "Adam learning rate of the main (generator) optimizer.", min=0.0)
    betas: tuple[float, float] = option((0.1, 0.999), cli=False)  # floats: torch rejects int betas
    ema_decay: float = option(0.999, "Per-step EMA decay (p_ema = d * p_ema + (1 - d) * p).", min=0.0, max=0.999999)
    seed: int = option(0, "Random seed (weights init, z, noise, data order).", min=0)
    log_every: int = option(50, "Steps between metric lines in log.jsonl.", min=0)
    preview_every: int = option(1000, "Steps between preview grids (0: never).", min=0)
    preview_noise: str = option(
        "seeded",
        "Noise inputs of the preview grids: seeded (the same maps from the run's seed in every grid) or zero"
        " (none, as `mmfs stylize --noise zero`).",
        choices=("seeded", "zero"),
    )
    checkpoint_every: int = option(5000, "Steps between checkpoints (0: only at the end).", min=0)
    keep_checkpoints: int = option(3, "Checkpoints to keep (oldest deleted).", min=0)
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK).")
    dtype: str = option(
        "fp32",
        "fp32 (the reference's precision) or bf16 (autocast: faster on GPUs, trains different weights).",
        choices=TRAIN_DTYPES,
        legacy=LEGACY_TRAIN_DTYPES,
    )
    tf32: bool = option(False, "Allow TF32 matmuls and convolutions on Ampere+ GPUs (off: fp32).", flags="--tf32")
    compile: bool = option(False, "torch.compile the trained networks.", flags="--compile")
    deterministic: bool = option(
        False,
        "Only deterministic kernels (bit-exact resume on CUDA too; slower there). On the CPU results repeat without it.",
        flags="--deterministic",
    )
    workers: int = option(2, "Data-loading worker processes per GPU (0: a thread reads ahead during the step).", min=0)
    preview_count: int = option(8, cli=False)  # samples in a preview grid

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        super().__post_init__()
        if self.preview_count < 1:
            raise OptionError("preview_count", f"must be >= 1, got {self.preview_count}")
        if self.batch_size % self.accum:
            raise OptionError("accum", f"must divide --batch-size: {self.batch_size} is not divisible by {self.accum}")


# --- the stages' own options (one class per command; `OPTIONS` finds them by command name) -----------

OPTIONS: dict[str, type[StageOptions]] = {}  # command -> its options class, filled as each class is defined


@dataclass(frozen=True)
class StageOptions(Options):
    """Base of a training stage's options. A subclass that sets `command` registers itself in `OPTIONS`, from
    which `TrainConfig` rebuilds a saved run and `mmfs.train` finds the stage (`Stage[XOptions]`)."""

    command: ClassVar[str]  # the CLI command, the stage's registry key and the run directory's suffix
    model_source: ClassVar[str | None] = None  # the input file whose stored network config a run uses
    rules: ClassVar[tuple[Rule, ...]] = ()  # what a new run needs (required, one_of: mmfs.config.options)
    loop_defaults: ClassVar[dict[str, Any]] = {}  # the stage's reference loop settings (lr, betas, EMA, batch, steps)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "command" in cls.__dict__:
            known = OPTIONS.get(cls.command)
            if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
                raise TypeError(f"two options classes for {cls.command!r}: {known.__qualname__} and {cls.__qualname__}")
            OPTIONS[cls.command] = cls


@dataclass(frozen=True)
class PriorOptions(StageOptions):
    """`mmfs train-prior`: data, regularisation and mixing (rosinality's defaults)."""

    command: ClassVar[str] = "train-prior"
    rules: ClassVar[tuple[Rule, ...]] = (required("photos", unless=RESUME),)
    loop_defaults: ClassVar[dict[str, Any]] = {
        "lr": 0.002, "betas": (0.0, 0.99), "ema_decay": ROSINALITY_EMA, "batch_size": 16, "steps": 800_000,
    }  # fmt: skip

    photos: str = option("", "Folder of aligned face photos (searched recursively).", path=True, show_default=False)
    r1_gamma: float = option(10.0, "R1 weight gamma (see docs/train-prior.md).", min=0.0)
    r1_every: int = option(16, "Lazy R1 interval in steps.", min=1)
    path_reg: float = option(2.0, "Path-length regularisation weight (0 turns it off).", min=0.0)
    path_every: int = option(4, "Lazy path-length regularisation interval.", min=1)
    path_batch_shrink: int = option(2, "Path-length regularisation runs on batch / shrink samples.", min=1)
    path_decay: float = option(0.01, "Decay of the running mean path length.", min=0.0, max=1.0)
    mixing_prob: float = option(0.9, "Style-mixing probability of every z.", min=0.0, max=1.0)
    mirror: bool = option(True, "Random left-right flips of the photos.")


@dataclass(frozen=True)
class EncoderOptions(StageOptions):
    """`mmfs pretrain-encoder` (Stage I): the prior and the loss weights."""

    command: ClassVar[str] = "pretrain-encoder"
    model_source: ClassVar[str | None] = "prior"
    rules: ClassVar[tuple[Rule, ...]] = (required("prior", unless=RESUME),)
    # Reference phase 1: lr 2e-4, beta1 0.1, EMA 0.999, batch 8, 200k iterations.
    loop_defaults: ClassVar[dict[str, Any]] = {
        "lr": 2e-4, "betas": (0.1, 0.999), "ema_decay": 0.999, "batch_size": 8, "steps": 200_000,
    }  # fmt: skip

    prior: str = option("", "StyleGAN2 prior: stylegan2-ffhq (fetched on first use) or a .safetensors from"
                        " `mmfs convert`.", path=True, show_default=False)  # fmt: skip
    l1: float = option(1.0, "Pixel L1 weight (reference lambda_L1).", min=0.0)
    feat: float = option(4.0, "Discriminator-feature L1 weight (reference lambda_Feat).", min=0.0)
    # Not the reference (it starts both at random): short runs (the demo) rebuild the eyes within hundreds of steps.
    first_layers_from_prior: bool = option(
        False, "Start decoder0 / to_rgb0 from the prior's conv and ToRGB at the feature resolution (reference: random)."
    )


@dataclass(frozen=True)
class FinetuneOptions(StageOptions):
    """`mmfs finetune` (Stage II): data, initial weights, DINO, loss weights and regularisation."""

    command: ClassVar[str] = "finetune"
    model_source: ClassVar[str | None] = "init"
    rules: ClassVar[tuple[Rule, ...]] = (required("photos", "art", "init", unless=RESUME),)
    # Reference phase 2 (exp/sp2pII-phase2.yaml): lr 1e-3, beta1 0.1, EMA 0.999, batch 8, 300k iterations.
    loop_defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-3, "betas": (0.1, 0.999), "ema_decay": 0.999, "batch_size": 8, "steps": 300_000,
    }  # fmt: skip

    photos: str = option("", "Folder of face photos (the source domain, e.g. FFHQ).", path=True, show_default=False)
    art: str = option("", "Folder of artworks of the target style (e.g. AAHQ).", path=True, show_default=False)
    init: str = option("", "Stage I output: final.safetensors or a checkpoint (or a published model: mmfs-phase2).",
                       path=True, show_default=False)  # fmt: skip
    disc: str | None = option(None, "Discriminator to start from (prior or checkpoint); default: found from --init.",
                              path=True)  # fmt: skip
    dino: str = option("dino_vitb8", DINO_HELP)
    adv: float = option(1.0, "Generator adversarial loss weight (reference lambda_GAN).", min=0.0)
    structure: float = option(0.5, "DINO structure loss weight (reference lambda_ST).", min=0.0)
    d_adv: float = option(0.5, "Discriminator loss weight (the reference halves it).", min=0.0)
    r1_gamma: float = option(10.0, "R1 weight gamma.", min=0.0)
    r1_every: int = option(16, "Lazy R1 interval in steps.", min=1)
    mixing_prob: float = option(0.5, "Style-mixing probability of the random styles.", min=0.0, max=1.0)


@dataclass(frozen=True)
class MapperOptions(StageOptions):
    """`mmfs train-mapper` (reference phase 3): data, initial weights, CLIP and loss weights."""

    command: ClassVar[str] = "train-mapper"
    model_source: ClassVar[str | None] = "init"
    rules: ClassVar[tuple[Rule, ...]] = (required("photos", "init", unless=RESUME),)
    loop_defaults: ClassVar[dict[str, Any]] = {
        "lr": 2e-4, "betas": (0.1, 0.999), "ema_decay": 0.999, "batch_size": 8, "steps": 10_000,
    }  # fmt: skip

    photos: str = option("", "Folder of face photos (searched recursively).", path=True, show_default=False)
    init: str = option("", "Stage II weights with their discriminator: a finetune run dir or checkpoint, or"
                       " mmfs-phase2 (the published one, fetched on first use).", path=True,
                       show_default=False)  # fmt: skip
    disc: str | None = option(None, "Discriminator file (training checkpoint); default: found from --init.", path=True)
    clip_model: str = option("ViT-B-32", CLIP_MODEL_HELP)
    clip_weights: str | None = option(None, CLIP_WEIGHTS_HELP, path=True)
    clip_tag: str = option("openai", CLIP_TAG_HELP)
    l1: float = option(1.0, "Pixel L1 weight (reference lambda_L1).", min=0.0)
    feat: float = option(4.0, "Discriminator-feature L1 weight (reference lambda_Feat).", min=0.0)
    mixing_prob: float = option(0.0, "Style-mixing probability of the target styles (reference 0).", min=0.0, max=1.0)


@dataclass(frozen=True)
class AdaptOptions(StageOptions):
    """`mmfs adapt` (reference phase 4): base weights, the style (exactly one of text / ref), loss weights."""

    command: ClassVar[str] = "adapt"
    model_source: ClassVar[str | None] = "checkpoint"
    rules: ClassVar[tuple[Rule, ...]] = (
        required("checkpoint"), required("photos", unless="INPUTS"), one_of("text", "ref", what="style"),
    )  # fmt: skip
    # Reference phase 4: Adam (0.9, 0.999) at 2e-4, batch 8, saved after 200 iterations.
    loop_defaults: ClassVar[dict[str, Any]] = {
        "lr": 2e-4, "betas": (0.9, 0.999), "ema_decay": 0.99, "batch_size": 8, "steps": 200,
        "checkpoint_every": 0, "preview_every": 100, "log_every": 10,
    }  # fmt: skip

    checkpoint: str = option("mmfs", "Stylizer with a CLIP mapper: a model name (mmfs, fetched on first use) or a"
                             " file from `mmfs train-mapper`.", flags=("--checkpoint", "-c"), path=True)  # fmt: skip
    photos: str = option("", "Folder of FFHQ-aligned face photos to adapt on; default: the INPUTS, detected and"
                         " aligned (with --aligned: the INPUTS folder as is).", path=True,
                         show_default=False)  # fmt: skip
    text: str | None = option(None, "Zero-shot: the target style as text, e.g. 'pop art'.")
    ref: str | None = option(None, "One-shot: a style reference image.", path=True)
    source_text: str = option("photo", "Zero-shot source anchor prompt (reference: photo).")
    clip_model: str = option("ViT-B-32", CLIP_MODEL_HELP)
    clip_weights: str | None = option(None, CLIP_WEIGHTS_HELP, path=True)
    clip_tag: str | None = option(None, CLIP_TAG_HELP + " Default: the tag recorded with the mapper, else openai.",
                                  show_default=False)  # fmt: skip
    dino: str = option("dino_vitb8", DINO_HELP)
    structure: float = option(0.5, "DINO structure loss weight (reference lambda_ST).", min=0.0)
    clip_dir: float = option(1.0, "CLIP direction loss weight (reference lambda_CLIP).", min=0.0)
    proj: float = option(100.0, "One-shot token projection loss weight (reference lambda_PROJ).", min=0.0)
    proj_block: int = option(3, "CLIP image block whose tokens the projection loss reads (reference resblocks[3]).",
                             min=0)  # fmt: skip
    mapper_dropout: bool = option(True, "Keep the frozen mapper's dropout on while adapting, as the reference does.")

    def __post_init__(self) -> None:
        super().__post_init__()  # with the rules: exactly one of --text and --ref
        if self.text is not None and not self.text.strip():
            raise OptionError("text", "the text prompt must not be empty")

    @property
    def one_shot(self) -> bool:
        return self.ref is not None


def options_class(command: str) -> type:
    try:
        return OPTIONS[command]
    except KeyError:
        raise ValueError(f"unknown training stage {command!r}; choose one of: {', '.join(sorted(OPTIONS))}") from None


# --- how a training command is started (not part of the run's config) -------------------------------


@dataclass(frozen=True)
class Pretrained(Options):
    """Shortcuts for the frozen networks a stage reads; `apply_pretrained` folds them into its options."""

    tiny: bool = option(False, "Random tiny CLIP / DINO of the same architecture (smoke runs, no download).",
                        flags="--tiny")  # fmt: skip
    dino_weights: str | None = option(None, "Local DINO ViT-B/8 weights (overrides --dino).", path=True)


def apply_pretrained(options: Any, pretrained: Pretrained) -> Any:
    """`options` with `--tiny` / `--dino-weights` written into its `dino` and `clip_model` fields."""
    changes: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(options)}
    if "dino" in names and (pretrained.tiny or pretrained.dino_weights):
        changes["dino"] = "tiny" if pretrained.tiny else pretrained.dino_weights
    if "clip_model" in names and pretrained.tiny:
        changes["clip_model"] = "tiny"
    return dataclasses.replace(options, **changes)


@dataclass(frozen=True)
class ModelChoice(Options):
    """The network of a run: a preset, else the config stored in the stage's input file (`model_source`)."""

    preset: str | None = option(None, PRESET_HELP, show_default=False)

    def preset_config(self) -> ModelConfig | None:
        """The preset's config; None: use the one stored in the stage's input file."""
        return get_preset(self.preset) if self.preset is not None else None


@dataclass(frozen=True)
class PriorModel(Options):
    """`train-prior`'s network: a preset, optionally at another output resolution."""

    preset: str = option("ffhq512", f"Network preset: {', '.join(PRESETS)} (ffhq512 is the paper's prior).")
    resolution: int | None = option(None, "Output side in px (a power of two, 16..4096): the preset's network at this"
                                    " resolution. Default: the preset's.", show_default=False)  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset in PRESETS:  # a wrong --resolution is a usage error before anything runs
            self.preset_config()

    def preset_config(self) -> ModelConfig:
        preset = get_preset(self.preset)  # ValueError naming the presets
        try:
            return at_resolution(preset, self.resolution, name=f"preset {self.preset}")
        except ValueError as exc:
            raise OptionError("resolution", str(exc)) from None


@dataclass(frozen=True)
class TrainRun(Options):
    """Where a run goes and how it reports; `resume` continues a run with its saved config."""

    outdir: Path = option(Path("runs"), "Parent folder of the numbered run directories.", flags=("--outdir", "-o"))
    resume: Path | None = option(None, "Continue this run directory from its latest checkpoint (other options ignored"
                                 " but --steps).")  # fmt: skip
    dry_run: bool = option(False, "Print the resolved config as JSON and exit.", flags="--dry-run")
    quiet: bool = option(False, "No progress bar.", flags=("--quiet", "-q"))


def check_run(run: TrainRun, model: ModelChoice | PriorModel) -> None:
    """The rule between a training command's groups: a resumed run keeps its own network."""
    if run.resume is not None and getattr(model, "resolution", None) is not None:
        raise OptionError("resolution", "a resumed run keeps its own resolution; drop --resolution")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; `to_json` is what `config.json` holds."""

    command: str  # the stage's CLI command and registry name: "pretrain-encoder", "finetune", ...
    model: ModelConfig
    loop: LoopConfig
    options: StageOptions  # the stage's own options class (`OPTIONS[command]`)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "model": self.model.to_dict(),
            "loop": dataclasses.asdict(self.loop),
            "options": dataclasses.asdict(self.options),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        # Runs saved before `tf32` existed had TF32 on for every CUDA run: resuming them keeps it.
        loop = {"tf32": True, **data["loop"]}
        return cls(
            command=data["command"],
            model=ModelConfig.from_dict(data["model"]),
            loop=_build(LoopConfig, loop),
            options=_build(options_class(data["command"]), data["options"]),
        )

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))


def _build(kind: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {kind.__name__} keys: {', '.join(unknown)}")
    return kind(**data)


def make_config(command: str, model: ModelConfig, *, options: Any = None, **loop: Any) -> TrainConfig:
    """A `TrainConfig`: the stage's options (a built dataclass or a dict of non-default values), and the loop
    settings from the stage's `loop_defaults` overridden by the non-None `loop` values."""
    kind = options_class(command)
    settings = {**kind.loop_defaults, **{k: v for k, v in loop.items() if v is not None}}
    loop_config = LoopConfig(**settings)
    check_fields(loop_config, legacy=False)  # "auto" and the like only resume old runs
    if not isinstance(options, kind):
        options = kind(**{k: v for k, v in (options or {}).items() if v is not None})
    return TrainConfig(command=command, model=model, loop=loop_config, options=options)

"""What a training stage declares, and the registry of stages by command name.

A stage (`train-prior`, `pretrain-encoder`, `finetune`, `train-mapper`, `adapt`) is a small class that
builds its networks and optimizers from its options and declares:

- `Stage[XOptions]`: its options class (`mmfs.config.train`), which names the command, once (`XOptions.command`),
  and which `self.options` is;

- `nets`: the modules that are checkpointed (`{"stylizer": ..., "stylizer_ema": ..., "disc": ...}`);
- `optimizers`: named optimizers; a phase trains exactly the parameters of its optimizer;
- `phases()`: `Phase(name, optimizer, loss, every, module)`, run in order each step (stylegan3's phases);
- `ema()`: `EmaSpec(source, target, decay)` pairs updated after every step (by default `stylizer_ema`
  follows `stylizer`);
- `folders()`: the image folders it trains on, by batch key; the base opens them once as the
  `dataset()` (none for a stage that makes its own inputs, like Stage I);
- `preview()`: a grid of samples; `final()`: the inference weights written as `final.safetensors`.

The base also holds what previews share: the fixed photos (`preview_photos()`), fixed latents
(`preview_latents()`) and noise (`preview_noise()`, as `--preview-noise` says), all apart from the
training RNG, and the grid layouts (`grid_of_columns`, `grid_of_rows`).

The shared loop (`mmfs.train.loop`) owns everything else: `requires_grad`, `zero_grad`, `backward`,
optimizer steps, gradient accumulation, autocast, DDP, EMA, logging, previews, checkpoints and resume.

Loss closures get a `StepContext` and return a dict of scalars with a `"total"`; other keys are logged as
`<phase>/<key>`. The loop back-propagates `total / accum` and DDP averages over ranks, so a loss should
be a per-image mean; a loss the reference sums over its batch is written as mean x `cfg.loop.batch_size`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor, nn

from mmfs.config.options import check_required
from mmfs.config.train import StageOptions

if TYPE_CHECKING:
    from mmfs.config.train import TrainConfig
    from mmfs.data.datasets import UnpairedFolders

OptionsT = TypeVar("OptionsT", bound=StageOptions)


@dataclass
class StepContext:
    """What a loss closure sees: the step (1-based), the micro-batch and a scratch dict shared by phases."""

    step: int
    micro: int  # micro-batch index within the step (0 .. accum-1)
    size: int  # images in this micro-batch on this rank (batch_size / (accum * world_size))
    batch: dict[str, Tensor] | None  # this micro-batch on the device (None for stages without data)
    stash: dict[str, Any] = field(default_factory=dict)  # per micro-batch, e.g. the G phase's fakes for D


@dataclass
class Phase:
    """One optimisation phase of a step: its loss trains the parameters of `optimizer`."""

    name: str  # log prefix: "G", "D", "D_reg"
    optimizer: str  # key in `Stage.optimizers`
    loss: Callable[[StepContext], dict[str, Tensor]]  # must return "total"; applies lazy-reg gain itself
    every: int = 1  # run on steps divisible by `every` (lazy regularisation)
    module: str | None = None  # the net this phase trains: DDP-wrapped, gradients synced on the last micro-batch


@dataclass(frozen=True)
class EmaSpec:
    """`target` follows `source` with per-step `decay` (over the parameters the stage trains)."""

    source: str
    target: str
    decay: float


class Stage(Generic[OptionsT]):
    """Base class of a training stage: `class FinetuneStage(Stage[FinetuneOptions])`, then the methods below."""

    Options: ClassVar[type[StageOptions]]  # from `Stage[X]` (a subclass may set another); its command, loop_defaults
    final_kind: ClassVar[str] = "stylizer"  # checkpoint kind of `final.safetensors` ("prior" for train-prior)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):
            if typing.get_origin(base) is Stage:
                (cls.Options,) = typing.get_args(base)

    def __init__(
        self, cfg: TrainConfig, device: torch.device, *, provided: tuple[str, ...] = (), **externals: Any
    ) -> None:
        """`provided`: required options the caller supplies another way (Stage I's prior as injected networks)."""
        check_required(cfg.options, cfg.command, provided=provided)  # the rules the options class declares
        self.cfg = cfg
        self.device = device
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._ddp: dict[str, nn.Module] = {}  # filled by the loop when running distributed
        self._compiled: dict[str, nn.Module] = {}  # filled by the loop with --compile
        self._compiled_fns: dict[str, Callable[..., Any]] = {}
        self._dataset: UnpairedFolders | None = None
        self._preview_photos: Tensor | None = None

    @property
    def options(self) -> OptionsT:
        """The run's stage options (`cfg.options`), typed as the stage's own options class."""
        return self.cfg.options

    # --- what a stage declares -------------------------------------------------------------------
    @classmethod
    def prepare_options(cls, options: Any) -> Any:
        """The options a new run records, from the ones given (e.g. a run directory -> its latest checkpoint)."""
        return options

    def phases(self) -> list[Phase]:
        """By default one phase: the stage's `g_loss` trains the `stylizer` with optimizer "G"."""
        return [Phase("G", "G", self.g_loss, module="stylizer")]

    def g_loss(self, ctx: StepContext) -> dict[str, Tensor]:
        raise NotImplementedError

    def ema(self) -> list[EmaSpec]:
        """By default `stylizer_ema` follows `stylizer` (the net `final()` writes), when the stage has them."""
        if "stylizer_ema" not in self.nets:
            return []
        return [EmaSpec("stylizer", "stylizer_ema", self.cfg.loop.ema_decay)]

    def folders(self) -> dict[str, str]:
        """The image folders the stage trains on, by batch key: `{"photo": options.photos}` when its options
        have `photos` (Stage II adds "art"); none otherwise (Stage I draws its own inputs)."""
        photos = getattr(self.options, "photos", None)
        return {"photo": photos} if photos is not None else {}

    def dataset(self) -> UnpairedFolders | None:
        """The stage's `folders()` as one dataset, opened on first use (None when it has no folders)."""
        if self._dataset is None:
            folders = self.folders()
            if folders:
                from mmfs.data.datasets import UnpairedFolders

                self._dataset = UnpairedFolders(folders, self.cfg.model.resolution)
        return self._dataset

    def preview(self) -> tuple[Tensor, int]:
        """Sample images `[N, 3, H, W]` in [-1, 1] and the number of grid columns (EMA nets, fixed inputs)."""
        raise NotImplementedError

    def final(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and metadata of `final.safetensors` (kind `final_kind`): the EMA stylizer by default."""
        from mmfs.checkpoint import module_state

        return module_state(self.nets["stylizer_ema"]), {}

    def compile_targets(self) -> list[str]:
        """Nets whose forward `--compile` compiles: by default those the phases train."""
        return sorted({p.module for p in self.phases() if p.module})

    # --- fixed preview inputs, apart from the training RNG -------------------------------------------
    def preview_photos(self) -> Tensor:
        """The first `preview_count` images of the first folder, on the device; read once, the same in every preview."""
        if self._preview_photos is None:
            source = self.dataset().sources[0]
            count = min(self.cfg.loop.preview_count, len(source))
            self._preview_photos = torch.stack([source.load(i)[0] for i in range(count)]).to(self.device)
        return self._preview_photos

    def preview_latents(self, count: int) -> Tensor:
        """`count` fixed z `[count, z_dim]` on the device, drawn from a generator seeded with the run's seed."""
        gen = torch.Generator().manual_seed(self.cfg.loop.seed)
        return torch.randn(count, self.cfg.model.z_dim, generator=gen).to(self.device)

    def preview_noise(self) -> dict[str, Any]:
        """The noise keywords of a preview's generator calls (`--preview-noise`).

        seeded: a new generator seeded with the run's seed, so every preview draws the same maps; pass the
        same dict to each call of one preview so that its calls draw in turn. zero: no noise maps.
        """
        if self.cfg.loop.preview_noise == "zero":
            return {"noise": "zero"}
        return {"generator": torch.Generator(self.device).manual_seed(self.cfg.loop.seed)}

    # --- helpers for loss closures -----------------------------------------------------------------
    def train_view(self, name: str, *, compiled: bool = True) -> nn.Module:
        """The net to call when training it: compiled and/or DDP-wrapped when the loop set those up."""
        if compiled and name in self._compiled:
            return self._compiled[name]
        return self._ddp.get(name, self.nets[name])

    def frozen_fn(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` (a frozen net's forward or method), compiled once when the run uses `--compile`."""
        if not self.cfg.loop.compile:
            return fn
        if key not in self._compiled_fns:
            self._compiled_fns[key] = torch.compile(fn, dynamic=False)  # static, as the trained nets (loop.py)
        return self._compiled_fns[key]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter some optimizer updates (the loop freezes all others)."""
        seen: dict[int, nn.Parameter] = {}
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                for p in group["params"]:
                    seen[id(p)] = p
        return list(seen.values())


def grid_of_columns(columns: list[Tensor]) -> tuple[Tensor, int]:
    """A preview grid from equal-length image columns `[N, 3, H, W]`: row i holds image i of every column."""
    return torch.stack(columns, dim=1).flatten(0, 1).float(), len(columns)


def grid_of_rows(rows: list[Tensor]) -> tuple[Tensor, int]:
    """A preview grid from equal-length image rows `[N, 3, H, W]`, one above the other."""
    return torch.cat(rows).float(), len(rows[0])


def lazy_regularization(lr: float, betas: tuple[float, float], every: int) -> tuple[float, tuple[float, float]]:
    """Adam settings corrected for a regulariser run every `every` steps: `lr*c`, `betas**c`, `c = every/(every+1)`."""
    c = every / (every + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)


def adam(params: list[nn.Parameter], lr: float, betas: tuple[float, float], *, reg_every: int = 0) -> torch.optim.Adam:
    """Adam as the reference builds it (eps 1e-8, no weight decay), lazy-regularisation corrected if `reg_every`.

    `foreach`: one kernel per operation over all parameters, bit for bit the per-parameter update (PyTorch
    picks it by itself only on GPUs) with far fewer operator calls, which cost more than the maths in small nets.
    """
    if reg_every:
        lr, betas = lazy_regularization(lr, betas, reg_every)
    return torch.optim.Adam(params, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=1e-8, foreach=True)


STAGES: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available by its options' command name (`cls.Options.command`).

    The options class registered itself with `mmfs.config.train` when it was defined (`TrainConfig` reads it).
    """
    command = cls.Options.command
    known = STAGES.get(command)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"two stages for {command!r}: {known.__qualname__} and {cls.__qualname__}")
    STAGES[command] = cls
    return cls

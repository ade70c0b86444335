"""`mmfs train-prior` on the tiny preset: the recipe's numbers, lazy intervals, the prior file, exact resume, the CLI."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mmfs.checkpoint import load_checkpoint, load_state_strict
from mmfs.config import PRESETS
from mmfs.config.model import at_resolution
from mmfs.config.train import ROSINALITY_EMA
from mmfs.train import make_config, train
from mmfs.train.log import read_log
from mmfs.train.loop import Trainer
from mmfs.train.stages.prior import path_length_losses
from mmfs_cli.app import app
from support.tiny import TINY, same_tensors, write_images

# Module scope: the module-scoped runs below use the same thread count as the runs they are compared with.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("prior") / "photos", 6, (40, 40))


def config(photos, **loop):
    options = {"photos": str(photos), "r1_every": 2, "path_every": 2, "path_reg": 2.0}
    settings = {"steps": 4, "batch_size": 4, "log_every": 1, "preview_every": 0, "checkpoint_every": 2, "workers": 0}
    return make_config("train-prior", TINY, options=options, **{**settings, **loop})


@pytest.fixture(scope="module")
def straight(photos, tmp_path_factory):
    """4 steps in one go, R1 and path-length regularisation every 2 steps; the weights before and after."""
    run_dir = tmp_path_factory.mktemp("straight")
    trainer = Trainer(config(photos, preview_every=4), run_dir, progress=False)
    before = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in trainer.stage.nets.items()}
    trainer.run()
    return {"run_dir": run_dir, "stage": trainer.stage, "before": before}


# --- the recipe's numbers ------------------------------------------------------------------------------------
def test_defaults_are_rosinalitys(photos):
    cfg = make_config("train-prior", TINY, options={"photos": str(photos)})
    assert (cfg.loop.lr, cfg.loop.betas, cfg.loop.batch_size, cfg.loop.steps) == (0.002, (0.0, 0.99), 16, 800_000)
    assert cfg.loop.ema_decay == pytest.approx(0.997784, abs=1e-6) == ROSINALITY_EMA
    o = cfg.options
    assert (o.r1_gamma, o.r1_every, o.mixing_prob, o.path_reg, o.path_every, o.path_batch_shrink) == (
        10.0, 16, 0.9, 2.0, 4, 2,
    )  # fmt: skip


def test_adam_is_corrected_for_both_lazy_regularisers(photos, tmp_path):
    stage = Trainer(config(photos), tmp_path, progress=False).stage
    opts = stage.optimizers
    # r1_every=2 and path_every=2 in `config`: c = 2/3 for both
    for name in ("G", "D"):
        group = opts[name].param_groups[0]
        assert group["lr"] == pytest.approx(0.002 * 2 / 3)
        assert group["betas"] == pytest.approx((0.0, 0.99 ** (2 / 3)))
    cfg = make_config("train-prior", TINY, options={"photos": str(photos), "path_reg": 0.0}, workers=0)
    stage = Trainer(cfg, tmp_path / "b", progress=False).stage
    assert stage.optimizers["G"].param_groups[0]["lr"] == 0.002  # no path-length term: no correction
    assert stage.optimizers["D"].param_groups[0]["lr"] == pytest.approx(0.002 * 16 / 17)
    assert "path_length" not in stage.nets and [p.name for p in stage.phases()] == ["D", "D_reg", "G"]


def test_path_length_penalty_matches_a_hand_computed_linear_generator():
    torch.manual_seed(0)
    b, slots, dim, pixels = 3, 4, 5, 6
    m = torch.randn(dim, pixels)
    ws = torch.randn(b, slots, dim, requires_grad=True)
    fake = (ws.sum(1) @ m).view(b, 1, 2, 3)  # d(sum fake*y)/d ws[i, s] = m @ y_i for every slot s
    y = torch.randn_like(fake)
    mean = torch.tensor(0.5)
    out = path_length_losses(fake, ws, y, mean, decay=0.01, weight=2.0, every=4)
    lengths = (m @ y.view(b, pixels).T).norm(dim=0)  # sqrt(mean over slots of |m y_i|^2) = |m y_i|
    a = 0.5 + 0.01 * (lengths.mean() - 0.5)
    assert out["mean"].item() == pytest.approx(a.item(), rel=1e-5)
    assert out["pl"].item() == pytest.approx((lengths - a).pow(2).mean().item(), rel=1e-5)
    assert out["total"].item() == pytest.approx(out["pl"].item() * 2.0 * 4, rel=1e-6)
    out["total"].backward()  # the penalty is differentiable (double backward) and reaches ws
    assert ws.grad is not None and torch.isfinite(ws.grad).all()


def test_style_mixing_draws_two_ws_and_a_crossover(photos, tmp_path):
    cfg = make_config("train-prior", TINY, options={"photos": str(photos), "mixing_prob": 1.0}, workers=0)
    stage = Trainer(cfg, tmp_path, progress=False).stage
    num_ws = stage.nets["g"].num_ws
    cuts = set()
    for _ in range(40):
        ws = stage.sample_ws(2)
        changes = [i for i in range(1, num_ws) if not torch.equal(ws[0, i], ws[0, i - 1])]
        assert len(changes) == 1  # exactly one crossover between two constant runs
        cuts.add(changes[0])
    assert cuts <= set(range(1, num_ws)) and len(cuts) > 1
    stage.cfg = make_config("train-prior", TINY, options={"photos": str(photos), "mixing_prob": 0.0})
    ws = stage.sample_ws(2)
    assert torch.equal(ws, ws[:, :1].expand_as(ws))


# --- a run ----------------------------------------------------------------------------------------------------
def test_regularisers_run_on_their_intervals_and_every_net_trains(straight):
    lines = read_log(straight["run_dir"] / "log.jsonl")
    assert [x["step"] for x in lines if "D_reg/r1" in x] == [2, 4]
    assert [x["step"] for x in lines if "G_reg/pl" in x] == [2, 4]
    assert all({"D/adv", "D/real", "D/fake", "G/adv"} <= x.keys() for x in lines)
    stage, before = straight["stage"], straight["before"]
    for name in ("g", "d"):
        after = stage.nets[name].state_dict()
        params = dict(stage.nets[name].named_parameters())
        assert all(not torch.equal(before[name][k], after[k]) for k in params), name  # every parameter moved
    assert stage.nets["path_length"].mean.item() > 0  # the running mean path length was updated
    g, ema = stage.nets["g"].state_dict(), stage.nets["g_ema"].state_dict()
    assert not torch.equal(g["style.1.weight"], ema["style.1.weight"])


def test_the_prior_file_holds_the_ema_generator_and_the_discriminator(photos, straight, tmp_path):
    from mmfs.nn import Discriminator, Generator

    run_dir = straight["run_dir"]
    prior = load_checkpoint(run_dir / "final.safetensors", kind="prior")
    assert prior.config == TINY and prior.meta["stage"] == "train-prior"
    last = load_checkpoint(run_dir / "checkpoints/step-000004.safetensors").tensors
    assert same_tensors(prior.subset("g."), {k[len("g_ema.") :]: v for k, v in last.items() if k.startswith("g_ema.")})
    assert same_tensors(prior.subset("d."), {k[len("d.") :]: v for k, v in last.items() if k.startswith("d.")})
    load_state_strict(Generator(TINY), prior.subset("g."))
    load_state_strict(Discriminator(TINY), prior.subset("d."))
    with Image.open(run_dir / "previews" / "step-000004.png") as img:  # 8 samples, 4 per row
        assert img.size == (4 * 32, 2 * 32)
    # ... and Stage I takes it as its prior: teacher = the EMA generator, frozen D = the discriminator
    cfg = make_config("pretrain-encoder", TINY, options={"prior": str(run_dir / "final.safetensors")}, steps=1,
                      batch_size=2, preview_every=0, log_every=1)  # fmt: skip
    stage1 = train(cfg, outdir=tmp_path, progress=False)
    final = load_checkpoint(stage1 / "final.safetensors", kind="stylizer")
    assert final.meta["prior"] == str((run_dir / "final.safetensors").resolve())


def test_resume_is_bit_exact(photos, straight, tmp_path):
    half = train(config(photos, steps=2), outdir=tmp_path, progress=False)
    train(resume=half, steps=4, progress=False)
    a = load_checkpoint(straight["run_dir"] / "checkpoints/step-000004.safetensors").tensors
    b = load_checkpoint(half / "checkpoints/step-000004.safetensors").tensors
    assert {k.split(".")[0] for k in a} == {"g", "g_ema", "d", "path_length"}
    assert same_tensors(a, b)


def test_a_missing_photo_folder_is_one_clear_line(tmp_path):
    from mmfs.errors import MMFSError

    cfg = make_config("train-prior", TINY, options={"photos": str(tmp_path / "nope")}, workers=0)
    with pytest.raises(MMFSError, match="nope: no such folder"):
        Trainer(cfg, tmp_path, progress=False)
    with pytest.raises(ValueError, match="mixing_prob"):
        make_config("train-prior", TINY, options={"photos": "x", "mixing_prob": 2.0})


# --- the CLI --------------------------------------------------------------------------------------------------
def test_cli_trains_resumes_and_reports_errors(photos, tmp_path):
    runner = CliRunner()
    base = ["train-prior", "--preset", "tiny", "--batch-size", "2", "--log-every", "1", "--preview-every", "0",
            "--workers", "0", "--quiet", "-o", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, [*base, "--photos", str(photos), "--steps", "1", "--r1-every", "1", "--path-reg", "0"])
    assert result.exit_code == 0, result.output
    final = result.stdout.strip().splitlines()[-1]
    assert final.endswith("final.safetensors") and load_checkpoint(final, kind="prior").config == TINY
    run_dir = final.rsplit("/", 1)[0]
    cfg = json.loads(open(f"{run_dir}/config.json").read())
    assert cfg["options"]["r1_every"] == 1 and cfg["options"]["path_reg"] == 0.0
    result = runner.invoke(app, ["train-prior", "--resume", run_dir, "--steps", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert [x["step"] for x in read_log(f"{run_dir}/log.jsonl")] == [1, 2]

    result = runner.invoke(app, base)
    said = " ".join(result.output.replace("│", " ").split())  # Typer's usage box wraps the line
    assert result.exit_code == 2 and "`mmfs train-prior` needs --photos (or --resume RUN_DIR)" in said  # usage
    result = runner.invoke(app, [*base, "--photos", str(photos), "--preset", "huge"])
    assert result.exit_code == 1 and "unknown preset 'huge'" in result.output and len(result.output.splitlines()) == 1
    dry = runner.invoke(app, ["train-prior", "--photos", str(photos), "--preset", "tiny64", "--dry-run"])
    assert dry.exit_code == 0
    cfg = json.loads(dry.stdout)
    assert cfg["model"]["resolution"] == 64 and cfg["loop"]["lr"] == 0.002 and cfg["options"]["mixing_prob"] == 0.9


def test_mirroring_flips_about_half_the_photos(photos, tmp_path):
    from mmfs.train.stage import StepContext

    stage = Trainer(config(photos), tmp_path, progress=False).stage
    batch = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2).repeat(50, 1, 1, 1)
    random.seed(0)
    real = stage.real(StepContext(1, 0, len(batch), {"photo": batch}))
    flipped = [torch.equal(r, b.flip(2)) for r, b in zip(real, batch, strict=True)]
    kept = [torch.equal(r, b) for r, b in zip(real, batch, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 30 < sum(flipped) < 70 and not math.isnan(real.sum().item())


# --- another resolution ----------------------------------------------------------------------------------------
def test_at_resolution_derives_the_preset_at_another_size():
    assert at_resolution(TINY, None) is TINY and at_resolution(TINY, 32) is TINY
    at64 = at_resolution(TINY, 64)
    assert (at64.resolution, at64.feature_resolution, at64.prior_num_ws, at64.num_ws) == (64, 8, 10, 8)
    assert at64.channels(64) == TINY.channel_base // 64 and at64.channels(8) == TINY.channels(8)  # same table
    assert at64.w_dim == TINY.w_dim and at64.encoder_channels == TINY.encoder_channels
    at16 = at_resolution(TINY, 16)
    assert (at16.resolution, at16.feature_resolution, at16.num_ws) == (16, 4, 6)  # min(8, 16 // 4), like `convert`
    big = at_resolution(PRESETS["ffhq512"], 128)
    assert (big.resolution, big.feature_resolution, big.prior_num_ws) == (128, 32, 12)
    for wrong in (8, 48, 100, 8192):
        with pytest.raises(ValueError, match="power of two from 16 to 4096"):
            at_resolution(TINY, wrong)
    with pytest.raises(ValueError, match="no channels left at 512 px.*at most 256 px"):
        at_resolution(TINY, 512)


def test_cli_trains_a_prior_at_another_resolution_and_stage_one_builds_on_it(photos, tmp_path):
    from mmfs.nn import Generator, Stylizer

    runner = CliRunner()
    base = ["--batch-size", "2", "--log-every", "1", "--preview-every", "0", "--quiet"]
    result = runner.invoke(app, ["train-prior", "--photos", str(photos), "--preset", "tiny", "--resolution", "16",
                                 "--steps", "2", "--r1-every", "2", "--path-every", "2", "--workers", "0", *base,
                                 "-o", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    final = result.stdout.strip().splitlines()[-1]
    prior = load_checkpoint(final, kind="prior")
    assert prior.config == at_resolution(TINY, 16) and prior.config.resolution == 16
    assert [x["step"] for x in read_log(final.rsplit("/", 1)[0] + "/log.jsonl")] == [1, 2]
    g = Generator(prior.config)
    load_state_strict(g, prior.subset("g."))
    with torch.no_grad():
        assert g(torch.randn(1, prior.config.z_dim)).shape == (1, 3, 16, 16)
    # Stage I takes the prior's own config from its metadata (no --preset) and builds a 16 px Stylizer on it.
    result = runner.invoke(app, ["pretrain-encoder", "--prior", final, "--steps", "1", *base, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    stylizer = load_checkpoint(result.stdout.strip().splitlines()[-1], kind="stylizer")
    assert stylizer.config == prior.config
    net = Stylizer(stylizer.config)
    load_state_strict(net, stylizer.tensors)
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 16, 16), net.ws_from_z(torch.randn(1, stylizer.config.z_dim)))
    assert out.shape == (1, 3, 16, 16)


def test_cli_refuses_a_wrong_resolution_as_a_usage_error(photos, tmp_path):
    runner = CliRunner()
    base = ["train-prior", "--photos", str(photos), "--dry-run"]
    for args, message in (
        (["--preset", "tiny", "--resolution", "48"], "must be a power of two from 16 to 4096"),
        (["--preset", "tiny", "--resolution", "8"], "must be a power of two from 16 to 4096"),
        (["--preset", "tiny", "--resolution", "512"], "preset tiny has no channels left at 512 px"),
        (["--resume", str(tmp_path), "--resolution", "64"], "a resumed run keeps its own resolution"),
    ):
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == 2, (args, result.output)
        assert "--resolution" in result.output and message in " ".join(result.output.split()), result.output
    dry = runner.invoke(app, [*base, "--preset", "ffhq512", "--resolution", "128"])
    assert dry.exit_code == 0, dry.output
    model = json.loads(dry.stdout)["model"]
    assert (model["resolution"], model["feature_resolution"], model["channel_base"]) == (128, 32, 32768)

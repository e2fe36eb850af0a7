"""One training loop for the three models (cnn, cgan, hint): `colorization train cnn|cgan|hint`.
Checkpoints, resuming, the NaN stop and the outputs: docs/training.md; torchrun: docs/scale.md.
CPU tip: when several torch processes share the cores, export OMP_WAIT_POLICY=PASSIVE (on 2 cores:
two concurrent trainings ~10x faster; a lone one ~2x slower, its idle OpenMP threads then sleep)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from colorization.atomic import atomic_path, atomic_write_text, check_replaceable, fresh_staging, publish_dir
from colorization.augment import DeviceData, sample_batch
from colorization.config import LineartRecipe, Params, StageInputs, TrainParams
from colorization.device import configure, memory_format, pick_device
from colorization.inference import colorize, palette, predict_hint, sample_grid
from colorization.locking import FolderLock, NoLock
from colorization.models import CONFIG_FILE, MODEL_OUTPUT, RUN_FILE, WEIGHTS_FILE, model_config
from colorization.models.averaging import averaged_copy, update_average
from colorization.models.specs import SPECS
from colorization.models.steps import Nets
from colorization.store import ProcessedStore

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pt"
PREVIEW_IMAGES = 6


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or inf; the message names the step and the checkpoint kept."""


def build_nets(kind: str, params: Params, device: torch.device) -> Nets:
    """The model's networks (its spec's builders, from its own section) and their optimisers."""
    spec, section = SPECS[kind], getattr(params.train, kind)
    arch = spec.networks(section)
    modules = {name: spec.builders[name](**kwargs) for name, kwargs in arch.items()}
    for net in modules.values():
        net.to(device=device, memory_format=memory_format(device)).train()
    forward = {k: torch.compile(v) if params.train.compile else v for k, v in modules.items()}
    betas = spec.betas(section)
    optimizers = {k: torch.optim.Adam(v.parameters(), lr=section.lr, betas=betas) for k, v in modules.items()}
    averaged = {"model": averaged_copy(modules["model"])} if spec.ema_decay(section) else {}
    return Nets(modules, forward, optimizers, arch, averaged)


def learning_rate(base: float, step: int, steps: int, decay: float) -> float:
    """Constant, then linear to 0 over the last `decay` share of the steps (resumes need no state)."""
    start = steps * (1.0 - decay)
    if decay == 0 or step <= start:
        return base
    return base * max(0.0, (steps - step + 1) / (steps - start + 1))


def fingerprint(kind: str, params: Params, store: ProcessedStore, world: int = 1) -> str:
    """What a checkpoint must match to be resumed: everything that shapes the run except its length."""
    package = Path(__file__).parent  # a checkpoint of other code is not this run's past
    code = [package / "train.py", package / "augment.py", *sorted((package / "models").glob("*.py"))]
    key = {
        "kind": kind,
        "model": getattr(params.train, kind).model_dump(exclude={"steps"}),
        "augment": params.train.augment.model_dump(),
        "lr_decay": params.train.lr_decay,
        "xdog": params.lineart.xdog.model_dump(),
        "seed": params.train.seed,
        "data": store.meta.get("fingerprint", store.meta),
        "histograms": str(store.histograms_path),
        "code": hashlib.sha256(b"".join(f.read_bytes() for f in code)).hexdigest(),
    }
    if world > 1:  # the shards and the global batch depend on the number of ranks
        key["world_size"] = world
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(run: Run, step: int) -> None:
    state = {
        "step": step,
        "fingerprint": run.tag,
        "run_id": run.tracking.run_id or "",
        "loss_rows": "".join(run.losses_csv.rows),  # the CSV so far: DVC deletes it before a re-run
        "models": {k: v.state_dict() for k, v in run.nets.modules.items()},
        "optimizers": {k: v.state_dict() for k, v in run.nets.optimizers.items()},
        "averaged": {k: v.state_dict() for k, v in run.nets.averaged.items()},
        "rng": {"torch": torch.get_rng_state(), "sampler": run.gen.get_state()},
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    with atomic_path(run.checkpoint) as tmp:
        torch.save(state, tmp)


def load_checkpoint(
    path: Path, tag: str, nets: Nets, gen: torch.Generator, device: torch.device
) -> dict | None:
    """The checkpoint at `path`, restored into `nets` and `gen`, when it was made for `tag`."""
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("fingerprint") != tag:
        log.warning("%s is from other settings or data; starting from scratch", path)
        return None
    for part, key in ((nets.modules, "models"), (nets.optimizers, "optimizers"), (nets.averaged, "averaged")):
        for k, v in part.items():
            v.load_state_dict(state[key][k])
    torch.set_rng_state(state["rng"]["torch"].cpu())
    gen.set_state(state["rng"]["sampler"].cpu())
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
    return state


class LossCsv:
    """plots/train/<kind>.csv, one row per step. On resume: the checkpoint's rows (`restored`: DVC
    deletes the file before a re-run), none after it (replayed), so it reads as one uninterrupted run."""

    def __init__(self, path: Path, columns: list[str], restored: str | None = None):
        self.columns = columns
        self.rows = [restored] if restored else []
        atomic_write_text(path, ",".join(["step", *columns]) + "\n" + "".join(self.rows))
        self.file = path.open("a")
        self.flush, self.close = self.file.flush, self.file.close

    def write(self, step: int, values: dict[str, float]) -> None:
        row = ",".join([str(step), *(f"{values[c]:.6g}" for c in self.columns)]) + "\n"
        self.file.write(row)
        self.rows.append(row)  # every row so far, without the header: saved with each checkpoint


class NoTracking:
    """Stands in for tracking.runs.TrainingRun when MLflow is off or missing; off rank 0, also LossCsv."""

    run_id = None
    experiment_id = None

    def _nothing(self, *args, **kwargs) -> None: ...

    # Named one by one, so that a misspelt call still fails here as it would on the real ones.
    log_params = log_metrics = flush = log_image = log_model = finish = write = close = _nothing


def open_tracking(params: Params, kind: str, resume_id: str | None):
    if not params.tracking.mlflow:
        return NoTracking()
    try:
        from colorization.tracking.runs import TrainingRun  # lazy: mlflow is optional on GPU boxes
    except ImportError as err:
        log.warning(
            "tracking.mlflow is on but MLflow cannot be imported (%s); training without tracking", err
        )
        return NoTracking()
    return TrainingRun(
        params.tracking.experiment, run_name=f"train-{kind}", resume_id=resume_id, tags={"model": kind}
    )


def preview(kind: str, nets: Nets, images, device: torch.device) -> np.ndarray:
    """Sample grid on fixed validation images. Columns: line art, hint palette, output, target;
    for generators also another image's hint and the output it steers to."""
    net, lineart, hint = nets.published(), images.lineart, images.hint

    def palettes(hints) -> np.ndarray:
        return np.stack([palette(h, lineart.shape[1]) for h in hints])

    try:
        if not SPECS[kind].generator:
            guessed = predict_hint(net, lineart, device, raw=True)  # what the network learns
            return sample_grid([lineart, palettes(guessed), palettes(hint), images.color])
        other = np.roll(hint, 1, axis=0)
        true, swapped = (colorize(net, lineart, h, device) for h in (hint, other))
        return sample_grid([lineart, palettes(hint), true, images.color, palettes(other), swapped])
    finally:
        net.train()


def train(
    params: Params,
    kind: str,
    inputs: StageInputs,
    out_dir: str | Path | None = None,
    steps: int | None = None,
    checkpoint_dir: str | Path | None = None,
    plots_path: str | Path | None = None,
) -> Path:
    """Train `kind` on the store in `inputs`, resuming a matching checkpoint; returns the model folder."""
    if kind not in SPECS:
        raise ValueError(f"unknown model {kind!r}; expected one of {', '.join(SPECS)}")
    steps = steps or getattr(params.train, kind).steps
    out_dir = Path(out_dir or Path(params.train.out) / kind)
    checkpoint = Path(checkpoint_dir or Path("checkpoints") / kind) / CHECKPOINT_FILE
    plots_path = Path(plots_path or Path("plots") / "train" / f"{kind}.csv")
    check_replaceable(out_dir, MODEL_OUTPUT)  # refused now, not after the training

    ranks = start_ranks(params.train)  # set-up: device, torchrun's processes, seeds
    data = load_data(params, kind, inputs, ranks)  # data: the train split on the device once
    run = open_run(params, kind, steps, ranks, data, checkpoint, plots_path)  # nets, resume, logs
    started = time.perf_counter()
    try:
        train_loop(run, params, ranks, data)  # the loop
    except BaseException:
        run.losses_csv.close()
        run.lock.release()
        run.tracking.finish("FAILED")
        if ranks.ddp:
            dist.destroy_process_group()
        raise
    run.losses_csv.close()
    # The trainable weights are the same on every rank (BatchNorm's running stats are not): -v shows it.
    if ranks.ddp and log.isEnabledFor(logging.DEBUG):
        digest = hashlib.sha256()
        for name, module in sorted(run.nets.modules.items()):
            for key, value in sorted(module.named_parameters()):
                digest.update(f"{name}.{key}".encode())
                digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
        log.debug("rank %d weights %s", ranks.rank, digest.hexdigest()[:16])
    if ranks.master:  # rank 0 alone publishes
        publish(run, data, ranks.device, out_dir)
        log.info("%s trained in %.1fs -> %s", kind, time.perf_counter() - started, out_dir)
    if ranks.ddp:
        dist.destroy_process_group()
    return out_dir


@dataclass(frozen=True)
class Ranks:
    """Where this process trains: its device, and its place among torchrun's processes."""

    device: torch.device
    ddp: bool
    rank: int
    world: int

    @property
    def master(self) -> bool:
        return self.rank == 0  # the one process that logs and writes files


def start_ranks(cfg: TrainParams) -> Ranks:
    device = pick_device(cfg.device)
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # launched by torchrun
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
    if ddp:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    configure(device, cfg.seed)
    return Ranks(device, ddp, rank, world)


@dataclass(frozen=True)
class TrainData:
    store: ProcessedStore
    recipe: LineartRecipe  # how the store's line art was made: recorded in the published model
    images: DeviceData  # this rank's share of the train split, on the device
    shown: Any  # a few validation images for the sample grids


def load_data(params: Params, kind: str, inputs: StageInputs, ranks: Ranks) -> TrainData:
    section = getattr(params.train, kind)
    store = ProcessedStore(inputs.store, inputs.histograms)
    if "lineart" not in store.meta:  # the model could not say which lines it was trained on
        raise ValueError(f"{inputs.store} records no line-art recipe: rebuild it (dvc repro preprocess)")
    recipe = LineartRecipe.model_validate(store.meta["lineart"])
    images = DeviceData.from_split(store.load("train"), ranks.device)
    if len(images) == 0:
        raise ValueError(f"the train split of {inputs.store} is empty")
    if ranks.ddp:  # this rank's disjoint share: every world-th image, the same count on every rank
        per_rank = len(images) // ranks.world
        if per_rank == 0:
            raise ValueError(f"{len(images)} training images cannot be split across {ranks.world} ranks")
        pick = slice(ranks.rank, per_rank * ranks.world, ranks.world)
        images = DeviceData(color=images.color[pick], lineart=images.lineart[pick], hint=images.hint[pick])
    if SPECS[kind].generator and store.image_size % 2**section.depth:
        raise ValueError(
            f"train.{kind}.depth {section.depth} needs an image size divisible by {2**section.depth}, "
            f"the store has {store.image_size}px"
        )
    shown = store.load("val", limit=PREVIEW_IMAGES)
    shown = shown if len(shown) else store.load("train", limit=PREVIEW_IMAGES)
    return TrainData(store, recipe, images, shown)


@dataclass
class Run:
    """One training's state (networks, generator, first step) and where it reports."""

    kind: str
    steps: int
    nets: Nets
    gen: torch.Generator  # every batch index and augmentation draw
    start: int  # the last step already done (0, or the checkpoint's)
    checkpoint: Path
    tag: str  # what the checkpoint must have been made for
    lock: Any
    losses_csv: Any
    tracking: Any


def open_run(
    params: Params, kind: str, steps: int, ranks: Ranks, data: TrainData, checkpoint: Path, plots_path: Path
) -> Run:
    """Networks and generator, resumed from a matching checkpoint; the CSV, lock and MLflow run."""
    cfg, device = params.train, ranks.device
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    nets = build_nets(kind, params, device)
    for net in nets.modules.values():
        if hasattr(net, "prior"):  # the hint net's automatic hint leans towards the train split's average
            net.prior.copy_(torch.from_numpy(data.store.mean_hint("train")))
    tag = fingerprint(kind, params, data.store, ranks.world)
    state = load_checkpoint(checkpoint, tag, nets, gen, device) or {}  # under DDP each loads rank 0's
    start = int(state.get("step", 0))
    if state:
        log.info("resuming %s from step %d (%s)", kind, start, checkpoint)
    if ranks.ddp:
        dist.barrier()  # every rank has read the checkpoint before rank 0 may overwrite it
        ids = [device.index] if device.type == "cuda" else None
        nets.forward = {k: DistributedDataParallel(v, device_ids=ids) for k, v in nets.modules.items()}
        if cfg.compile:
            nets.forward = {k: torch.compile(v) for k, v in nets.forward.items()}
    # One trainer per checkpoint folder: a second (a re-run while an orphaned one runs) refuses.
    lock = FolderLock(checkpoint.parent, "trainer") if ranks.master else NoLock()
    restored = state.get("loss_rows")  # only from a checkpoint, so only on resume
    losses_csv = LossCsv(plots_path, list(SPECS[kind].losses), restored) if ranks.master else NoTracking()
    tracking = open_tracking(params, kind, state.get("run_id") or None) if ranks.master else NoTracking()
    tracking.log_params(
        {
            "model": kind,
            "train": cfg.model_dump(exclude=set(SPECS)),
            kind: getattr(cfg, kind).model_dump(),
            "image_size": data.store.image_size,
            "train_images": len(data.images) * ranks.world,
            "device": str(device),
            "world_size": ranks.world,
        }
    )
    return Run(kind, steps, nets, gen, start, checkpoint, tag, lock, losses_csv, tracking)


def train_loop(run: Run, params: Params, ranks: Ranks, data: TrainData) -> None:
    """Steps `run.start + 1 .. run.steps`: a batch, a step, the logs, and a checkpoint every so often."""
    cfg, kind, device = params.train, run.kind, ranks.device
    section = getattr(cfg, kind)
    spec, fmt = SPECS[kind], memory_format(device)
    # The hint model learns real colours only: no recolouring for it (spec.generator).
    augment = (cfg.augment, fmt, spec.generator, data.images.mean_hint(), params.lineart.xdog)
    log.info(
        f"training {kind} on {device} (rank {ranks.rank} of {ranks.world}): {len(data.images)} images "
        f"at {data.store.image_size}px, steps {run.start + 1}..{run.steps}"
    )
    started = time.perf_counter()
    for step in range(run.start + 1, run.steps + 1):
        for group in (g for optimizer in run.nets.optimizers.values() for g in optimizer.param_groups):
            group["lr"] = learning_rate(section.lr, step, run.steps, cfg.lr_decay)
        batch = sample_batch(data.images, section.batch_size, run.gen, *augment, spec.local_hints(section))
        losses = spec.step(run.nets, batch, section, device)
        for name, mean in run.nets.averaged.items():
            update_average(mean, run.nets.modules[name], step, spec.ema_decay(section))
        if ranks.ddp:  # the mean over the ranks (one all-reduce), so every rank logs and checks the same
            stacked = torch.stack([v.float() for v in losses.values()])
            dist.all_reduce(stacked)
            losses = dict(zip(losses, stacked / ranks.world, strict=True))
        values = {k: v.item() for k, v in losses.items()}  # one host sync
        if bad := {k: v for k, v in values.items() if not math.isfinite(v)}:
            kept = f"last good checkpoint kept: {run.checkpoint}"
            kept = kept if run.checkpoint.exists() else "no checkpoint yet"
            raise NonFiniteLoss(f"{kind}: non-finite loss at step {step} ({bad}); stopping, {kept}")
        run.losses_csv.write(step, values)
        run.tracking.log_metrics(values, step)
        if step % cfg.log_every == 0 and ranks.master:
            rate = (step - run.start) * section.batch_size * ranks.world / (time.perf_counter() - started)
            shown = " ".join(f"{k}={v:.4f}" for k, v in values.items())
            log.info("%s step %d/%d %s (%.0f img/s)", kind, step, run.steps, shown, rate)
        if step % cfg.sample_every == 0 and ranks.master:
            run.tracking.log_image(preview(kind, run.nets, data.shown, device), key="samples", step=step)
        if step % cfg.checkpoint_every == 0 or step == run.steps:
            # Logs reach disk and MLflow only at a checkpoint: a resumed run replays no logged step.
            run.losses_csv.flush()
            run.tracking.flush()
            if ranks.master:
                save_checkpoint(run, step)
            if ranks.ddp:
                dist.barrier()


def publish(run: Run, data: TrainData, device: torch.device, out_dir: Path) -> None:
    """model.pt (state_dict), config.json, samples.png, run.json, all at once; then the run ends."""
    kind = run.kind
    grid = preview(kind, run.nets, data.shown, device)
    run.tracking.log_image(grid, key="samples", step=run.steps)
    staging = fresh_staging(out_dir, MODEL_OUTPUT)
    torch.save(run.nets.published().state_dict(), staging / WEIGHTS_FILE)
    config = model_config(kind, run.nets.arch["model"], data.store.image_size, data.recipe)
    (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    cv2.imwrite(str(staging / "samples.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    model_uri = None
    if not isinstance(run.tracking, NoTracking):  # MLflow's serving model, with a signature and an example
        from colorization.models import load_trained, read_config
        from colorization.tracking.serving import example_input, predict

        example = example_input(kind, data.shown.lineart[:2], data.shown.hint[:2])
        output = predict(load_trained(staging), read_config(staging), example)  # a CPU copy, as served
        model_uri = run.tracking.log_model(staging, example, output)
    run_info = {
        "run_id": run.tracking.run_id,
        "experiment_id": run.tracking.experiment_id,
        "model_uri": model_uri,
        "kind": kind,
        "steps": run.steps,
    }
    (staging / RUN_FILE).write_text(json.dumps(run_info, indent=2) + "\n")
    publish_dir(staging, out_dir, MODEL_OUTPUT)
    run.checkpoint.unlink(missing_ok=True)  # done: a re-run (dvc repro -f) trains afresh
    run.lock.release()
    run.tracking.finish()

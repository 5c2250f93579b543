"""Training in PyTorch: the ``wav2vec2.training.Trainer`` of this backend.

``TorchTrainer(task)`` trains a ``Wav2Vec2ForCTC``, ``Wav2Vec2ForSequenceClassification`` or
``Wav2Vec2ForPreTraining`` on the NumPy batches of ``wav2vec2.training`` (masks and negatives come
in the batch; the model draws none). The update is ``torch.optim.AdamW`` (decoupled weight decay,
none on biases and normalisation weights: two parameter groups), the same update rule as the
TensorFlow and Flax trainers; gradients are accumulated over micro-batches, their global norm
clipped (``parallel.clip_coefficient``, shared by the three).

- Precision: weights, gradients and optimizer state are float32; ``precision="bf16"`` runs the
  forward and backward under ``torch.autocast`` in bfloat16 (losses are computed in float32 by
  the heads).
- Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised (gloo on
  CPU, nccl on CUDA) and the model wrapped in ``DistributedDataParallel``; each process takes its
  rows of every batch (``wav2vec2.training.parallel``), so N processes make the same updates as
  one process with the same batches. Only rank 0 writes files.
- ``fsdp=True`` (for models that do not fit one device): instead of DDP's replicas, parameters,
  gradients and optimizer state are sharded over the processes with FSDP2's ``fully_shard`` (each
  encoder layer, then the whole model), the same updates otherwise. Checkpoints stay the library's
  own full weights: every process takes part in gathering them, rank 0 writes them; on resume every
  process loads them and keeps its shard. LayerDrop is refused (each process would skip other layers).
- Randomness: dropout, LayerDrop and Gumbel noise draw from torch's generator, seeded for each
  update from (seed, rank, update) (``parallel.step_seed``) inside ``torch.random.fork_rng``, so
  the caller's generator is untouched and a resumed run draws what an uninterrupted one drew.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from ...training import parallel
from ...training.trainer import check_model, check_options, task_class
from ...training.schedule import decays_weight
from . import modeling

def model_class(task: str):
    return task_class(modeling, task)


def _tensor(value, device, dtype=None):
    if value is None:
        return None
    tensor = torch.from_numpy(np.ascontiguousarray(value)).to(device)
    return tensor if dtype is None else tensor.to(dtype)


def forward(model, task: str, batch: Dict[str, np.ndarray], device, training: bool):
    """The model's output on a NumPy batch; in training with the batch's masks (and negatives)."""
    inputs = {
        "input_values": _tensor(batch["input_values"], device),
        "attention_mask": _tensor(batch.get("attention_mask"), device),
    }
    if task == "pretraining":
        return model(
            **inputs, mask_time_indices=_tensor(batch["mask_time_indices"], device),
            sampled_negative_indices=_tensor(batch.get("sampled_negative_indices"), device),
        )
    if training:
        inputs["mask_time_indices"] = _tensor(batch.get("mask_time_indices"), device)
        inputs["mask_feature_indices"] = batch.get("mask_feature_indices")
    return model(**inputs, labels=_tensor(batch.get("labels"), device))


def new_model(task: str, config, seed: int = 0):
    """A freshly initialised model for ``task`` (the reference's initialisation, from ``seed``)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_class(task)(config)


@torch.no_grad()
def eval_logits(model, task: str, batch: Dict[str, np.ndarray], precision: str = "fp32") -> np.ndarray:
    """Evaluation forward (no dropout, no SpecAugment) as NumPy: CTC (batch, frames, vocab),
    classification (batch, labels), pretraining the projected states (batch, frames, dim)."""
    was_training = model.training
    model.eval()
    try:
        autocast = torch.autocast(model.device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with autocast:
            out = forward(model, task, batch, model.device, training=False)
        out = out.projected_states if task == "pretraining" else out.logits
        return out.float().cpu().numpy()
    finally:
        model.train(was_training)


class TorchTrainer:
    """See the module docstring. ``device``: a torch device (default: cuda when under torchrun
    with CUDA, else cpu)."""

    backend = "torch"

    def __init__(self, task: str = "ctc", *, precision: str = "fp32", freeze_feature_encoder: bool = False,
                 fsdp: bool = False, device: Optional[str] = None):
        check_options(task, precision)
        self.task = task
        self.precision = precision
        self.freeze_feature_encoder = freeze_feature_encoder
        self.fsdp = fsdp
        self.requested_device = device
        self.rank, self.world_size = 0, 1

    # ------------------------------------------------------------------ set-up
    @property
    def is_writer(self) -> bool:
        """Whether this process writes the log and the checkpoints (rank 0)."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Whether the weights are split over the processes (FSDP under torchrun): then every process
        runs ``logits``, ``save_model`` and ``state_dict``, which gather them."""
        return self.fsdp and self.world_size > 1

    def _init_distributed(self, device: torch.device) -> None:
        import torch.distributed as dist

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def init(self, model, settings) -> None:
        check_model(model, modeling, self.task)
        if self.fsdp and model.config.layerdrop > 0:  # refused in one process too, to fail before scaling up
            raise ValueError(
                f"fsdp: LayerDrop ({model.config.layerdrop}) would skip different layers on each process, "
                "and a sharded layer is gathered by all of them together; set layerdrop to 0 (--layerdrop 0)"
            )
        if self.requested_device is not None:
            device = torch.device(self.requested_device)
        elif torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        else:
            device = torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self._init_distributed(device)
        self.device = device
        self.settings = settings
        self.optimizer_settings = settings.optimizer
        self.model = model.to(device=device, dtype=torch.float32).train()
        if self.freeze_feature_encoder:
            self.model.freeze_feature_encoder()
        self.network = self.model
        if self.sharded:
            self._shard(device)
        elif self.world_size > 1:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        # After sharding: fully_shard replaces every parameter by its shard (a DTensor).
        self.parameters = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        s = settings.optimizer
        groups = [
            {"params": [p for name, p in self.parameters if decays_weight(name)], "weight_decay": s.weight_decay},
            {"params": [p for name, p in self.parameters if not decays_weight(name)], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=0.0, betas=s.betas, eps=s.epsilon
        )
        self.step_count = 0

    def _shard(self, device: torch.device) -> None:
        """FSDP2: each encoder layer its own group (gathered only while it runs), the rest the root's."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # FSDP2 warns that a view among the outputs would lose its backward hook to an in-place op;
        # the trainer only reads the outputs (loss, logits), never writes them.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor", category=UserWarning)
        mesh = init_device_mesh(device.type, (self.world_size,))
        for layer in self.model.body.encoder.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(self.model, mesh=mesh)

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ training
    def train_step(self, batches: Sequence[Dict[str, np.ndarray]], learning_rate: float) -> Dict[str, float]:
        settings = self.optimizer_settings
        self.step_count += 1
        if self.task == "pretraining":
            self.model.set_gumbel_temperature(parallel.gumbel_temperature(self.step_count))
        for _, p in self.parameters:
            p.grad = None
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(parallel.step_seed(self.settings.seed, self.rank, self.step_count))
            total = self._accumulate(batches)
        for _, p in self.parameters:
            if p.grad is None:  # a parameter the loss did not reach still takes its AdamW step
                p.grad = torch.zeros_like(p)
        grads = [p.grad for _, p in self.parameters]
        # Sharded, each process holds a part of every gradient (a DTensor): its squares are added up.
        local = [g.to_local() for g in grads] if self.sharded else grads
        squares = torch.stack([torch.linalg.vector_norm(g.double()) for g in local]).square().sum()
        if self.sharded:
            torch.distributed.all_reduce(squares)
        norm = squares.sqrt().item()
        clip = parallel.clip_coefficient(norm, settings.max_grad_norm)
        if clip != 1.0:
            for g in grads:
                g.mul_(clip)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.optimizer.step()
        return {"loss": total / len(batches), "grad_norm": norm}

    def _accumulate(self, batches) -> float:
        """Forward and backward of every micro-batch; gradients summed into ``.grad``; the loss."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for number, batch in enumerate(batches):
            part, weight = parallel.shards(self.task, self.model.config, batch, self.world_size)[self.rank]
            # Gradients are reduced over the processes once, in the backward pass of the last micro-batch.
            last = number == len(batches) - 1
            no_sync = contextlib.nullcontext()
            if self.sharded:
                self.model.set_requires_gradient_sync(last)
            elif self.world_size > 1 and not last:
                no_sync = self.network.no_sync()
            with no_sync:
                with self._autocast():
                    loss = forward(self.network, self.task, part, self.device, training=True).loss.float()
                # DDP and FSDP average gradients over the processes: scale by world size to sum them instead.
                (loss * (weight * self.world_size / len(batches))).backward()
            total += loss.detach().double() * weight
        if self.world_size > 1:
            torch.distributed.all_reduce(total)
        return total.item()

    # ------------------------------------------------------------------ evaluation
    def logits(self, batch: Dict[str, np.ndarray]) -> np.ndarray:
        return eval_logits(self.model, self.task, batch, self.precision)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, np.ndarray]:
        """The AdamW moments by parameter name, whole (sharded ones gathered: every process calls this)."""
        state = {"step": np.array(self.step_count, np.int64)}
        for name, p in self.parameters:
            moments = self.optimizer.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                value = moments.get(key)
                if value is None:
                    value = torch.zeros(p.shape, dtype=p.dtype)
                elif self.sharded:
                    value = value.full_tensor()  # a collective: every process gathers every moment
                state[f"{key}/{name}"] = value.cpu().numpy()
        return state

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        expected = {"step"} | {f"{k}/{n}" for n, _ in self.parameters for k in ("exp_avg", "exp_avg_sq")}
        missing = sorted(expected - set(state))
        if missing:
            raise ValueError(f"the optimizer state lacks {missing[:3]} (another model or task?)")
        self.step_count = int(state["step"])
        for name, p in self.parameters:
            moments = {"step": torch.tensor(float(self.step_count))}
            for key in ("exp_avg", "exp_avg_sq"):
                value = np.asarray(state[f"{key}/{name}"])
                if value.shape != tuple(p.shape):
                    raise ValueError(f"optimizer state {key}/{name}: shape {value.shape}, the model's is {tuple(p.shape)}")
                moments[key] = torch.tensor(value, dtype=p.dtype, device=p.device)
                if self.sharded:  # this process's shard (each holds the whole value: no communication)
                    from torch.distributed.tensor import distribute_tensor

                    moments[key] = distribute_tensor(moments[key], p.device_mesh, p.placements, src_data_rank=None)
            self.optimizer.state[p] = moments

    def save_model(self, directory: Optional[Path]) -> None:
        """Write the model into ``directory``. Sharded, every process calls this to gather the
        weights, and those that do not write pass None."""
        if not self.sharded:
            self.model.save_pretrained(directory)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # The whole weights, gathered onto rank 0's CPU (the other ranks get an empty dict).
        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if directory is not None:
            whole = self._unsharded_model()
            whole.load_state_dict(state)
            whole.save_pretrained(directory)

    def load_model(self, directory: Path) -> None:
        from ...io import read_state_dict

        state = read_state_dict(directory)
        if not self.sharded:
            self.model.load_canonical_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        whole = self._unsharded_model()
        whole.load_canonical_state_dict(state)  # the canonical names and checks, on the whole weights
        set_model_state_dict(self.model, whole.state_dict(), options=StateDictOptions(full_state_dict=True))

    def _unsharded_model(self):
        """A model like this one, unsharded, on the CPU, its weights uninitialised (to be loaded)."""
        with torch.device("meta"):
            whole = model_class(self.task)(self.model.config)
        return whole.to_empty(device="cpu")


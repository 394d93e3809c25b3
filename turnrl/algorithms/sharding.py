"""Sharded training with torch FSDP2 (`fully_shard`): each process holds 1/N of the policy's parameters, gradients
and optimizer state, and gathers the whole model only while it needs it.

`accelerate launch --config_file configs/accelerate/fsdp.yaml` (or `ACCELERATE_USE_FSDP=true` under torchrun) turns
it on; the trainer shards the model itself rather than through accelerate's FSDP plugin, so that the same code runs
on a CPU (gloo), where accelerate's plugin falls back to plain data parallelism without a word.

- Sharding: every decoder layer (the classes the model names in `_no_split_modules`) is one FSDP unit, and the
  rest (embeddings, final norm, head; the LoRA wrapper) is the root unit. A frozen reference model is sharded the
  same way. Modules outside the policy (a separate value model, a value head, ALP's σ) stay whole, and their
  gradients are averaged by the trainer as without sharding.
- Forward and backward are collectives (an all-gather per unit, a reduce-scatter of its gradients per backward),
  so during an update every process runs the same number of micro-batches: a process with fewer runs zero-weight
  copies of one of its samples (`Trainer.update`). FSDP averages the gradients over processes, as the trainer's
  own all-reduce does without sharding.
- Generation, evaluation and no-grad forwards outside the update (the critic's values) run on gathered weights
  (`full_weights`): every unit is unsharded once and kept so until the block ends, so processes may generate for
  different numbers of turns. The whole model must fit on one device while it generates; its gradients and
  optimizer state need not.
- Gradient clipping sums the squares of every process's shard (`clip_grad_norm`). Checkpoints and `final/` hold
  the full state dict, gathered on every process and written by the main one; the optimizer state is saved per
  process (a resumed run needs the same number of processes).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager

import torch
import torch.distributed as dist

FSDP_SWITCH = "ACCELERATE_USE_FSDP"
TRUE = ("1", "true", "yes", "y", "on")


def requested() -> bool:
    """Whether the launch asks for FSDP (`accelerate launch` with an FSDP config sets ACCELERATE_USE_FSDP)."""
    return os.environ.get(FSDP_SWITCH, "").strip().lower() in TRUE


def launch_settings() -> dict:
    """The FSDP settings of the accelerate config that turnrl follows, checked: version 2 only; FULL_SHARD
    (reshard after forward) or SHARD_GRAD_OP (keep the gathered weights until backward)."""
    version = os.environ.get("FSDP_VERSION", "2").strip()
    if version != "2":
        raise ValueError(f"FSDP version {version} is not supported: turnrl shards with FSDP2 (torch's fully_shard); "
                         "set fsdp_version: 2 in the accelerate config (configs/accelerate/fsdp.yaml)")
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "").strip().lower()
    strategy = os.environ.get("FSDP_SHARDING_STRATEGY", "").strip().upper()
    if strategy and strategy not in ("FULL_SHARD", "SHARD_GRAD_OP", "1", "2"):
        raise ValueError(f"FSDP sharding strategy {strategy} is not supported; choose FULL_SHARD or SHARD_GRAD_OP")
    if reshard:
        reshard_after_forward = reshard in TRUE
    else:
        reshard_after_forward = strategy not in ("SHARD_GRAD_OP", "2")
    if os.environ.get("FSDP_OFFLOAD_PARAMS", "").strip().lower() in TRUE:
        raise ValueError("FSDP parameter offloading is not supported by turnrl's trainer; set fsdp_offload_params: "
                         "false")
    return {"reshard_after_forward": reshard_after_forward}


class NoSharding:
    """The default: every process holds the whole model."""

    sharded = False

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    @contextmanager
    def full_weights(self):
        yield


class FSDPSharding:
    """FSDP2 over every process (see the module docstring)."""

    sharded = True

    def __init__(self, device: torch.device, *, reshard_after_forward: bool = True):
        from torch.distributed.device_mesh import init_device_mesh

        self.device = device
        self.reshard_after_forward = reshard_after_forward
        world = dist.get_world_size() if dist.is_initialized() else 1
        if not dist.is_initialized():   # one process: a group of one, so the same code runs
            dist.init_process_group("gloo" if device.type == "cpu" else "nccl", init_method="tcp://127.0.0.1:0",
                                    rank=0, world_size=1)
        self.mesh = init_device_mesh(device.type, (world,))
        self.units: list = []        # the FSDP modules of every sharded model
        self._gathered = 0

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FSDPModule, fully_shard

        names = set(_layer_classes(model))
        layers = [m for m in model.modules() if type(m).__name__ in names]
        if not layers:
            raise ValueError(f"FSDP: {type(model).__name__} names no decoder layer class (`_no_split_modules`), so "
                             "turnrl cannot choose the units to shard")
        for layer in layers:
            fully_shard(layer, mesh=self.mesh, reshard_after_forward=self.reshard_after_forward)
        fully_shard(model, mesh=self.mesh, reshard_after_forward=self.reshard_after_forward)
        self.units += [m for m in model.modules() if isinstance(m, FSDPModule)]
        return model

    @contextmanager
    def full_weights(self):
        """Gather every unit's parameters and keep them gathered until the block ends (nested blocks gather once).
        Every process must enter and leave together; inside, forwards are local."""
        if self._gathered:
            self._gathered += 1
            try:
                yield
            finally:
                self._gathered -= 1
            return
        for unit in self.units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        self._gathered = 1
        try:
            yield
        finally:
            self._gathered = 0
            for unit in self.units:
                unit.reshard()
                unit.set_reshard_after_forward(self.reshard_after_forward, recurse=False)

    # -- gradients and state ------------------------------------------------------------------------------

    @staticmethod
    def clip_grad_norm(params: list[torch.nn.Parameter], limit: float) -> float:
        """`torch.nn.utils.clip_grad_norm_` over sharded gradients: the norm of the whole gradient (squares of
        every process's shard summed), then every shard scaled by min(1, limit / (norm + 1e-6))."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return 0.0
        local = [_local(g) for g in grads]
        squares = torch.stack([g.detach().float().pow(2).sum() for g in local]).sum()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(squares)
        norm = squares.sqrt()
        if limit != float("inf"):
            scale = torch.clamp(limit / (norm + 1e-6), max=1.0)
            for g in local:
                g.mul_(scale.to(g.dtype))
        return float(norm)

    @staticmethod
    def full_state_dict(model: torch.nn.Module) -> dict:
        """The whole model's state dict on every process (CPU tensors); every process must call it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
        # a tied weight (the head sharing the embeddings) once, under its first name, as save_pretrained writes it
        tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
        return {k: v for k, v in state.items() if k not in tied}

    def load_full_state_dict(self, model: torch.nn.Module, weights: dict) -> None:
        """Load whole tensors (named as in the model's state dict, or as in a peft adapter file) into the shards;
        every process must call it with the same weights."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        names = adapter_names(model)
        weights = {names.get(k, k): v for k, v in weights.items()}
        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))

    @staticmethod
    def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
        """This process's optimizer state, with every sharded tensor replaced by its local shard."""
        state = optimizer.state_dict()
        state["state"] = {k: {n: _local(v).clone() if torch.is_tensor(v) else v for n, v in s.items()}
                          for k, s in state["state"].items()}
        return state

    @staticmethod
    def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Load `optimizer_state`'s output back: each local shard becomes a sharded tensor of its parameter again."""
        from torch.distributed.tensor import DTensor

        optimizer.load_state_dict(state)
        for param, slots in optimizer.state.items():
            if not isinstance(param, DTensor):
                continue
            for name, value in list(slots.items()):
                if torch.is_tensor(value) and not isinstance(value, DTensor) and value.dim() > 0:
                    slots[name] = DTensor.from_local(value.to(param.to_local().device), param.device_mesh,
                                                     param.placements, run_check=False, shape=param.shape,
                                                     stride=param.stride())


def make_sharding(device: torch.device):
    """FSDPSharding when the launch asks for it, else NoSharding."""
    if not requested():
        return NoSharding()
    return FSDPSharding(device, **launch_settings())


def _local(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _layer_classes(model: torch.nn.Module) -> list[str]:
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return list(names)
    return []


def adapter_names(model: torch.nn.Module) -> dict[str, str]:
    """{a peft adapter file's key: the model's state-dict key} (the file leaves out the adapter's name)."""
    adapters = list(getattr(model, "peft_config", {}) or {})
    if not adapters:
        return {}
    pattern = re.compile(r"\.(" + "|".join(re.escape(a) for a in adapters) + r")(?=\.)")
    return {pattern.sub("", key): key for key in model.state_dict() if pattern.search(key)}

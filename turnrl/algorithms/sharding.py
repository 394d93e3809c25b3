"""Sharded training: torch FSDP2 (`FSDPSharding`) or DeepSpeed ZeRO-2/3 (`DeepSpeedSharding`, below). Under FSDP2
(`fully_shard`) each process holds 1/N of the policy's parameters, gradients and optimizer state, and gathers the
whole model only while it needs it.

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
    kind = "none"

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    @contextmanager
    def full_weights(self):
        yield


class FSDPSharding:
    """FSDP2 over every process (see the module docstring)."""

    sharded = True
    kind = "fsdp"

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


DEEPSPEED_SWITCH = "ACCELERATE_USE_DEEPSPEED"


def deepspeed_requested() -> bool:
    """Whether the launch asks for DeepSpeed (`accelerate launch` with a DeepSpeed config sets ACCELERATE_USE_DEEPSPEED)."""
    return os.environ.get(DEEPSPEED_SWITCH, "").strip().lower() in TRUE


def deepspeed_settings() -> dict:
    """The DeepSpeed settings of the accelerate config that turnrl follows, checked: ZeRO stage 2 or 3, no offload,
    no DeepSpeed config file (turnrl writes the engine's config itself)."""
    if os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "").strip() not in ("", "none", "None"):
        raise ValueError("a DeepSpeed config file (deepspeed_config_file) is not supported: turnrl builds the engine's "
                         "config itself; give zero_stage in the accelerate config instead "
                         "(configs/accelerate/deepspeed_zero2.yaml, deepspeed_zero3.yaml)")
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2").strip()
    if stage not in ("2", "3"):
        raise ValueError(f"DeepSpeed ZeRO stage {stage} is not supported; choose zero_stage 2 or 3")
    for key in ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"):
        if os.environ.get(key, "none").strip().lower() not in ("", "none"):
            raise ValueError("DeepSpeed offloading is not supported by turnrl's trainer; set "
                             "offload_optimizer_device and offload_param_device to none")
    return {"stage": int(stage)}


class DeepSpeedSharding:
    """DeepSpeed ZeRO-2 (optimizer state and gradients partitioned) or ZeRO-3 (parameters too) for the policy.

    The engine is built at the first update (`engine`), so a zero-shot evaluation and a warm start before it run on
    the plain model as without sharding. The engine owns the backward (`backward`, gradients reduced at the last
    micro-batch of an optimizer step), gradient clipping and the policy's optimizer step (`step`); a critic and
    ALP's σ keep their own optimizer and the trainer's own gradient average. Generation, evaluation and the
    critic's values run on gathered parameters under ZeRO-3 (`full_weights`); ZeRO-2 keeps whole parameters."""

    sharded = True
    kind = "deepspeed"

    def __init__(self, device: torch.device, *, stage: int = 2):
        os.environ.setdefault("DS_ACCELERATOR", "cpu" if device.type == "cpu" else device.type)
        try:
            import deepspeed  # noqa: F401
        except ModuleNotFoundError as err:
            raise ValueError(f"DeepSpeed launches need the deepspeed package ({err}): pip install "
                             "'turnrl[deepspeed]'") from None
        self.device, self.stage = device, stage
        self.module: torch.nn.Module | None = None
        self.engine = None
        self.units: list = []

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """The policy is handed to the engine later (`build`); a frozen reference stays whole."""
        if self.module is None:
            self.module = model
        return model

    def build(self, params: list[torch.nn.Parameter], *, learning_rate: float, weight_decay: float,
              max_grad_norm: float):
        """The engine over the policy's trainable parameters (torch's AdamW as its optimizer)."""
        import deepspeed

        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="gloo" if self.device.type == "cpu" else "nccl")
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
        config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                  "gradient_clipping": max_grad_norm if max_grad_norm > 0 else 0.0,
                  "zero_optimization": {"stage": self.stage}, "zero_allow_untested_optimizer": True,
                  "zero_force_ds_cpu_optimizer": False, "steps_per_print": 10 ** 12, "wall_clock_breakdown": False}
        self.engine, _, _, _ = deepspeed.initialize(model=self.module, optimizer=optimizer, config=config)
        return self.engine

    @contextmanager
    def full_weights(self):
        if self.engine is None or self.stage < 3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.module.parameters())):
            yield

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss)

    def step(self) -> float:
        """The engine's optimizer step (clipping inside); returns the policy's gradient norm before clipping."""
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else 0.0

    def full_state_dict(self, model: torch.nn.Module) -> dict:
        """The whole model's state dict on every process; every process must call it."""
        with self.full_weights():
            state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
        tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
        return {k: v for k, v in state.items() if k not in tied}

    def save(self, folder) -> None:
        """The engine's partitioned optimizer state (and DeepSpeed's copy of the weights), one file per process."""
        self.engine.save_checkpoint(str(folder), tag="state", save_latest=False)

    def load(self, folder) -> None:
        self.engine.load_checkpoint(str(folder), tag="state", load_module_strict=False, load_optimizer_states=True,
                                    load_lr_scheduler_states=False)

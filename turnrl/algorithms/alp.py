"""ALP, adaptive layerwise perturbation (Ye, Zhang, Hao et al. 2026, arXiv 2603.19470; research notes §2).

During the update, every selected decoder layer's input hidden state (the residual stream, before the layer's
first norm) gets Gaussian noise, h_l <- h_l + σ_l·ε_l with ε_l ~ N(0, I) of h_l's shape and σ_l = exp(log σ_l)
one learnable scalar per layer. The importance ratio is then π_θ,δ (the perturbed training policy) over the
behaviour policy recorded at rollout, with no separate π_old (notes §2.1), through a dual-clip PPO loss
(`objectives.ppo_clip_loss`) with the window and c of `ALP_DEFAULTS`.

`LayerwiseNoise` injects the noise with forward pre-hooks found on any transformers causal LM (no class is
patched), only inside `with noise.active(step, micro_batch):`. The noise is drawn from a generator seeded by
(seed, step, micro_batch, layer) alone, so a forward run twice, or recomputed under gradient checkpointing,
sees the same ε; backward regenerates ε from the seed instead of keeping it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from turnrl.agents.policy import at_least_float32
from turnrl.algorithms.objectives import sequence_log_ratio

ALP_DEFAULTS = {
    # The authors' multi-turn script `train_perturb.sh` (Qwen2.5-7B) unless said otherwise; notes §2.2.
    "ratio_level": "sequence",      # loss_mode=sequence: Seq-ALP, the best row of the results table (notes §2.4)
    "geometric": False,             # ppo_is_geometric=False: the sequence ratio is the full product, not the mean
    "clip_low": 0.5,                # clip_ratio_low: the ratio is clipped to [1 - 0.5, 1 + 3.0] = [0.5, 4.0],
    "clip_high": 3.0,               # clip_ratio_high: the notes' "window [0.5, 4.0]"
    "dual_clip": 3.0,               # clip_ratio_c: loss of a negative advantage bounded by -c·A
    "log_ratio_clamp": 20.0,        # core_algos.compute_policy_loss_perturbed clamps the log ratio to [-20, 20]
    "sigma_init": 1e-8,             # perturb_std in the script (1e-6 and 1e-2 in other README/config versions)
    "sigma_lr": 1e-2,               # perturb_lr in the script (5e-4 in another README version)
    "sigma_learnable": True,        # coef_learnable: σ is a parameter ("adaptive")
    "layers": None,                 # perturb_start/end_layer default: all layers (all beat partial ranges, §2.4)
    "regulariser_alpha": 1e-3,      # code default of the optional α σ² − β log σ² term; whether the paper runs
    "regulariser_beta": 1e-3,       # used it is unclear (notes §2.2), so a trainer should keep it opt-in
    "grad_clip": 1.0,               # grad_clip in the script
}


def clamp_log_ratio(log_ratio: torch.Tensor, bound: float = ALP_DEFAULTS["log_ratio_clamp"]) -> torch.Tensor:
    """The authors' guard on the log importance ratio before exp: clamp to [-bound, bound] (no gradient where
    clamped). It only stops exp overflowing; the PPO window ([1 - clip_low, 1 + clip_high] of the ratio, passed
    to `ppo_clip_loss`) is what bounds the update."""
    return torch.clamp(log_ratio, -bound, bound)


def sequence_token_log_ratio(log_ratio: torch.Tensor, mask: torch.Tensor,
                             geometric: bool = ALP_DEFAULTS["geometric"]) -> torch.Tensor:
    """Seq-ALP's log ratio, "value from the sequence, gradient token-wise" (the GSPO-token stop-gradient form of
    `compute_policy_loss_perturbed`): every agent token of a row holds the row's log ratio, the sum of
    `log_ratio` over its agent tokens (`geometric=False`, the authors' default: the full product of the token
    ratios) or their mean (`geometric=True`: GSPO's length-normalised ratio, `objectives.sequence_log_ratio`),
    while d/d log_ratio[t] of token t's value is 1 (its own token only). 0 off agent tokens. Shapes [B, L]."""
    weights = mask.to(log_ratio.dtype)
    if geometric:
        sequence = sequence_log_ratio(log_ratio, mask)
    else:
        sequence = (log_ratio * weights).sum(-1, keepdim=True) * weights
    return (sequence.detach() + log_ratio - log_ratio.detach()) * weights


def noise_seed(seed: int, step: int, micro_batch: int, layer: int) -> int:
    """The generator seed of one layer's noise: a hash of (seed, step, micro_batch, layer) only, the same in every
    process and every run, so that a recomputation regenerates the same ε."""
    digest = hashlib.blake2b(repr((int(seed), int(step), int(micro_batch), int(layer))).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def standard_normal(seed: int, shape: torch.Size, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """ε ~ N(0, I) of this shape, device and dtype, from a generator on that device seeded with `seed`."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


class _AddSeededNoise(torch.autograd.Function):
    """hidden + exp(log_sigma)·ε, ε regenerated from `seed` in backward rather than saved: only the scalar
    log_sigma is kept for backward. d/d hidden = identity; d/d log_sigma = σ · Σ grad_out·ε."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, log_sigma: torch.Tensor, seed: int) -> torch.Tensor:
        sigma = torch.exp(log_sigma)
        ctx.save_for_backward(sigma)
        ctx.seed, ctx.shape, ctx.device, ctx.dtype = seed, hidden.shape, hidden.device, hidden.dtype
        return hidden + sigma.to(hidden.dtype) * standard_normal(seed, hidden.shape, hidden.device, hidden.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_log_sigma = None
        if ctx.needs_input_grad[1]:
            (sigma,) = ctx.saved_tensors
            eps = standard_normal(ctx.seed, ctx.shape, ctx.device, ctx.dtype)
            grad_log_sigma = sigma * torch.sum(at_least_float32(grad_out) * at_least_float32(eps)).to(sigma.dtype)
        return (grad_out if ctx.needs_input_grad[0] else None), grad_log_sigma, None


def _layer_count(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    count = getattr(config, "num_hidden_layers", None)
    return count if count is not None else getattr(config, "n_layer", None)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of any transformers causal LM, peft wrappers included, found without knowing its class:
    the `nn.ModuleList` with the most parameters whose children all have one class and whose length is the
    config's layer count (`num_hidden_layers`, or `n_layer` for GPT-2)."""
    count = _layer_count(model)
    if count is None:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}: it has no config with "
                         "num_hidden_layers (or n_layer); pass a transformers causal LM or its peft wrapper")
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == count
                  and len({type(child) for child in m}) == 1]
    if not candidates:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}: no torch.nn.ModuleList of "
                         f"{count} layers of one class (the config's layer count) in its module tree")
    return max(candidates, key=lambda m: sum(p.numel() for p in m.parameters()))


def _select(layers: None | tuple[int, int] | Sequence[int], count: int) -> list[int]:
    if layers is None:
        return list(range(count))
    if isinstance(layers, tuple):
        if len(layers) != 2 or not all(isinstance(i, int) for i in layers) or not 0 <= layers[0] < layers[1] <= count:
            raise ValueError(f"layers as a tuple is a (start, stop) range with 0 <= start < stop <= {count} "
                             f"(this model's layer count), got {layers!r}")
        return list(range(*layers))
    indices = list(layers)
    if (not indices or not all(isinstance(i, int) and 0 <= i < count for i in indices)
            or len(set(indices)) != len(indices)):
        raise ValueError(f"layers as a list holds distinct layer indices in [0, {count}), got {layers!r}; "
                         "use None for all layers or a (start, stop) tuple for a range")
    return sorted(indices)


class LayerwiseNoise(nn.Module):
    """Learnable (or fixed) Gaussian noise on the input of each selected decoder layer of `model`.

    `sigma`: the initial σ, one float for every selected layer or one per selected layer; > 0 when learnable
    (log σ cannot move from -inf), >= 0 when fixed. `learnable`: log σ is an `nn.Parameter` (`parameters()` yields
    it, for its own learning rate), else a buffer (`parameters()` is empty). `layers`: None for all layers, a
    (start, stop) tuple for a range, or a list of layer indices. `seed`: with (step, micro_batch, layer), the noise.

    The state dict holds `log_sigma` (one entry per selected layer, float32) and nothing of the model, so σ is
    saved and restored exactly with `state_dict()` / `load_state_dict()`. The module is on the device of the
    model's first selected layer; `.to()` it if the model moves.

    Outside `active()` the hooks return at once, so the model computes exactly what an unhooked model does.
    A recomputation that re-runs the hooks (a torch.utils.checkpoint around the whole model) must run inside the
    same `active()` context; transformers' own gradient checkpointing recomputes the layer's forward only, after
    the hooks, so backward may run outside it.
    """

    def __init__(self, model: nn.Module, sigma: float | Sequence[float] = 1e-3, learnable: bool = True,
                 layers: None | tuple[int, int] | Sequence[int] = None, seed: int = 0):
        super().__init__()
        all_layers = decoder_layers(model)
        self.layer_indices = _select(layers, len(all_layers))
        sigmas = [float(sigma)] * len(self.layer_indices) if isinstance(sigma, (int, float)) else list(sigma)
        if len(sigmas) != len(self.layer_indices):
            raise ValueError(f"{len(sigmas)} sigmas for {len(self.layer_indices)} selected layers")
        if any(s < 0 for s in sigmas) or (learnable and any(s <= 0 for s in sigmas)):
            raise ValueError(f"sigma must be > 0 when learnable (it is trained in log space) and >= 0 when fixed, "
                             f"got {sigmas}")
        device = next(all_layers[self.layer_indices[0]].parameters(), torch.empty(0)).device
        log_sigma = torch.tensor(sigmas, dtype=torch.float32, device=device).log()
        if learnable:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.seed = seed
        self._context: tuple[int, int] | None = None
        self._handles = [all_layers[index].register_forward_pre_hook(self._hook(position, index), with_kwargs=True)
                         for position, index in enumerate(self.layer_indices)]

    def _hook(self, position: int, layer: int):
        def add_noise(module: nn.Module, args: tuple, kwargs: dict):
            if self._context is None:
                return None
            step, micro_batch = self._context
            seed = noise_seed(self.seed, step, micro_batch, layer)
            if args and isinstance(args[0], torch.Tensor):
                hidden = args[0]
            elif isinstance(kwargs.get("hidden_states"), torch.Tensor):
                hidden = kwargs["hidden_states"]
            else:
                raise TypeError(f"{type(module).__name__} (layer {layer}) was called without its hidden states as "
                                "the first positional argument or `hidden_states=`: cannot add ALP noise")
            noisy = _AddSeededNoise.apply(hidden, self.log_sigma[position].to(hidden.device), seed)
            if args and args[0] is hidden:
                return (noisy, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": noisy}
        return add_noise

    @contextlib.contextmanager
    def active(self, step: int = 0, micro_batch: int = 0) -> Iterator[LayerwiseNoise]:
        """Inside, forwards of the model add the noise of (seed, step, micro_batch): the same noise every time."""
        if not self._handles:
            raise RuntimeError("LayerwiseNoise.active() after remove(): the hooks are gone; build a new one")
        if self._context is not None:
            raise RuntimeError(f"LayerwiseNoise.active() is already on (step, micro_batch = {self._context})")
        self._context = (int(step), int(micro_batch))
        try:
            yield self
        finally:
            self._context = None

    def sigmas(self) -> list[float]:
        """The current σ of each selected layer, in the order of `layer_indices`, as plain floats."""
        return torch.exp(self.log_sigma.detach()).tolist()

    def regulariser(self, alpha: float = ALP_DEFAULTS["regulariser_alpha"],
                    beta: float = ALP_DEFAULTS["regulariser_beta"]) -> torch.Tensor:
        """The optional σ regulariser α σ² − β log σ², averaged over the selected layers as in the authors' code
        (`mean(alpha·σ² − beta·log σ²)`, notes §2.2). Per layer it is smallest at σ² = β / α."""
        return torch.mean(alpha * torch.exp(2 * self.log_sigma) - beta * 2 * self.log_sigma)

    def remove(self) -> None:
        """Remove the hooks: the model is as before `LayerwiseNoise` was built."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


class NoNoise:
    """perturbation: none. The same interface as `LayerwiseNoise`, doing nothing: `active()` is a null context."""

    layer_indices: tuple[int, ...] = ()

    @contextlib.contextmanager
    def active(self, step: int = 0, micro_batch: int = 0) -> Iterator[NoNoise]:
        yield self

    def parameters(self) -> list:
        return []

    def sigmas(self) -> list[float]:
        return []


NO_NOISE = NoNoise()

"""ALP's layerwise noise (hooks on any decoder, seeded and recomputable noise, gradients to log σ) and its
ratio helpers, on tiny random models built from configs (no hub)."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.utils.checkpoint import checkpoint

from turnrl.algorithms.alp import (
    ALP_DEFAULTS,
    LayerwiseNoise,
    _AddSeededNoise,
    clamp_log_ratio,
    decoder_layers,
    noise_seed,
    sequence_token_log_ratio,
    standard_normal,
)
from turnrl.algorithms.objectives import ppo_clip_loss

VOCAB = 128
SMALL = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}
# name -> (config class, model class, extra config, LoRA targets, decoder layer class name)
ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}, ["q_proj", "v_proj"], "LlamaDecoderLayer"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}, ["q_proj", "v_proj"], "Qwen2DecoderLayer"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8}, ["q_proj", "v_proj"], "Qwen3DecoderLayer"),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}, ["q_proj", "v_proj"], "MistralDecoderLayer"),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 8}, ["q_proj", "v_proj"], "GemmaDecoderLayer"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 8}, ["q_proj", "v_proj"], "Gemma2DecoderLayer"),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"head_dim": 8}, ["q_proj", "v_proj"], "Gemma3DecoderLayer"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {}, ["c_attn"], "GPT2Block"),
}


def build(name: str) -> nn.Module:
    config_name, model_name, extra, _, _ = ARCHITECTURES[name]
    if name == "gpt2":
        config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                         bos_token_id=0, eos_token_id=0)
    else:
        config = getattr(transformers, config_name)(**SMALL, **extra)
    torch.manual_seed(0)
    return getattr(transformers, model_name)(config).eval()


def llama(hidden: int = 64, dtype: torch.dtype = torch.float32) -> nn.Module:
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).to(dtype).eval()


def ids(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def loss_of(model: nn.Module, input_ids: torch.Tensor, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """A fixed weighting of the token log-probs, so that d loss / d σ is not trivially zero."""
    if inputs_embeds is None:
        logits = model(input_ids=input_ids).logits
    else:
        logits = model(inputs_embeds=inputs_embeds).logits
    logprobs = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    weights = torch.linspace(-1.0, 2.0, logprobs.numel(), dtype=logprobs.dtype).view_as(logprobs)
    return (logprobs * weights).sum()


# ------------------------------------------------------------------------------------------ off is off


def test_outside_active_sigma_zero_and_after_remove_the_model_is_untouched():
    model, x = llama(), ids()
    with torch.no_grad():
        plain = model(x).logits
        noise = LayerwiseNoise(model, sigma=0.1)
        assert torch.equal(model(x).logits, plain)
        with noise.active():
            assert not torch.allclose(model(x).logits, plain)
        noise.remove()
        assert torch.equal(model(x).logits, plain)
        assert all(not layer._forward_pre_hooks for layer in decoder_layers(model))
        zero = LayerwiseNoise(model, sigma=0.0, learnable=False)
        with zero.active(step=3, micro_batch=1):
            assert torch.equal(model(x).logits, plain)


def test_active_twice_or_after_remove_is_an_error():
    noise = LayerwiseNoise(llama())
    with noise.active(), pytest.raises(RuntimeError, match="already on"), noise.active():
        pass
    noise.remove()
    with pytest.raises(RuntimeError, match="after remove"), noise.active():
        pass


# ------------------------------------------------------------------------- where and how much noise


def test_fixed_sigma_noise_has_its_variance_per_layer_and_lands_before_the_first_norm():
    model, x = llama(hidden=64), ids(batch=4, length=64)
    sigmas = [0.05, 0.2]
    before, after, normed = {}, {}, {}
    layers = decoder_layers(model)
    for i, layer in enumerate(layers):
        layer.register_forward_pre_hook(lambda m, a, i=i: before.__setitem__(i, a[0].clone()), prepend=True)
    noise = LayerwiseNoise(model, sigma=sigmas, learnable=False)
    for i, layer in enumerate(layers):
        layer.register_forward_pre_hook(lambda m, a, i=i: after.__setitem__(i, a[0].clone()))
        layer.input_layernorm.register_forward_pre_hook(lambda m, a, i=i: normed.__setitem__(i, a[0].clone()))
    with torch.no_grad(), noise.active(step=1):
        model(x)
    n = before[0].numel()  # 16384 values per layer: the std estimate is within ~0.6% (1 / sqrt(2n)) of sigma
    for i, sigma in enumerate(sigmas):
        delta = after[i] - before[i]
        assert delta.std().item() == pytest.approx(sigma, rel=0.03)
        assert abs(delta.mean().item()) < 5 * sigma / math.sqrt(n)
        assert torch.equal(normed[i], after[i])   # the first norm reads the perturbed residual stream
    assert noise.sigmas() == pytest.approx(sigmas)


def test_noise_is_the_seeded_draw_on_positional_and_keyword_hidden_states():
    class Config:
        num_hidden_layers = 2

    class Identity(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, hidden_states):
            return hidden_states * self.scale

    class Toy(nn.Module):
        config = Config()

        def __init__(self, keyword: bool):
            super().__init__()
            self.keyword, self.layers = keyword, nn.ModuleList([Identity(), Identity()])

        def forward(self, h):
            for layer in self.layers:
                h = layer(hidden_states=h) if self.keyword else layer(h)
            return h

    h = torch.randn(3, 5, 8)
    expected = h + sum(0.3 * standard_normal(noise_seed(7, 2, 4, i), h.shape, h.device, h.dtype) for i in range(2))
    for keyword in (True, False):
        toy = Toy(keyword)
        noise = LayerwiseNoise(toy, sigma=0.3, learnable=False, seed=7)
        with torch.no_grad(), noise.active(step=2, micro_batch=4):
            assert torch.allclose(toy(h), expected, atol=1e-6)


def test_noise_follows_the_hidden_states_dtype_and_grads_reach_a_float32_log_sigma():
    model, x = llama(dtype=torch.bfloat16), ids()
    seen = []
    noise = LayerwiseNoise(model, sigma=0.1)
    decoder_layers(model)[1].register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    with noise.active():
        loss_of(model, x).backward()
    assert seen == [torch.bfloat16] and noise.log_sigma.dtype == torch.float32
    assert torch.all(noise.log_sigma.grad != 0)


# ------------------------------------------------------------------------------------------ gradients


def test_add_keeps_no_full_size_tensor_for_backward_and_passes_the_hidden_gradient_through():
    hidden = torch.randn(4, 16, 32, requires_grad=True)
    log_sigma = torch.tensor(math.log(0.1), requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = _AddSeededNoise.apply(hidden, log_sigma, 123)
    assert saved == [1]                            # sigma only, not the 2048-value noise
    grad = torch.randn_like(out)
    out.backward(grad)
    eps = standard_normal(123, hidden.shape, hidden.device, hidden.dtype)
    assert torch.equal(hidden.grad, grad)
    assert log_sigma.grad.item() == pytest.approx(0.1 * (grad * eps).sum().item(), rel=1e-5)


def test_log_sigma_gradients_match_materialised_noise_and_finite_differences():
    model, x = llama(hidden=32, dtype=torch.float64), ids()
    step, micro_batch = 5, 2
    embeds = model.get_input_embeddings()(x).detach()

    noise = LayerwiseNoise(model, sigma=[0.05, 0.1], seed=3)
    alp_embeds = embeds.clone().requires_grad_()
    with noise.active(step, micro_batch):
        loss = loss_of(model, x, alp_embeds)
    loss.backward()
    noise.remove()

    reference = noise.log_sigma.detach().clone().requires_grad_()   # float32, as LayerwiseNoise keeps it

    def materialised(i):
        def hook(module, args):
            h = args[0]
            eps = standard_normal(noise_seed(3, step, micro_batch, i), h.shape, h.device, h.dtype)
            return (h + torch.exp(reference[i]).to(h.dtype) * eps, *args[1:])
        return hook

    handles = [layer.register_forward_pre_hook(materialised(i)) for i, layer in enumerate(decoder_layers(model))]
    ref_embeds = embeds.clone().requires_grad_()
    ref_loss = loss_of(model, x, ref_embeds)
    ref_loss.backward()
    assert torch.equal(loss, ref_loss)
    assert torch.all(noise.log_sigma.grad != 0)
    assert torch.allclose(noise.log_sigma.grad, reference.grad, rtol=1e-5, atol=0)
    assert torch.equal(alp_embeds.grad, ref_embeds.grad)   # the hidden-state gradient passes through unchanged

    # Central differences of the materialised-noise loss. Llama's RMSNorm normalises in float32 even in a float64
    # model, so the loss is smooth only to ~1e-7 relative: a step of 1e-2 keeps the difference quotient to ~1e-4.
    centre = reference.detach().clone()
    for i in range(2):
        values, points = [], []
        for sign in (1, -1):
            with torch.no_grad():
                reference.copy_(centre)
                reference[i] += sign * 1e-2
                points.append(reference[i].item())   # the float32 point actually evaluated
                values.append(loss_of(model, x, embeds).item())
        slope = (values[0] - values[1]) / (points[0] - points[1])
        assert slope == pytest.approx(noise.log_sigma.grad[i].item(), rel=2e-3)
    for handle in handles:
        handle.remove()


# ------------------------------------------------------------------------------------ reproducibility


def test_same_step_and_micro_batch_give_the_same_noise_and_others_do_not():
    model, x = llama(), ids()
    noise = LayerwiseNoise(model, sigma=0.1, seed=0)
    with torch.no_grad():
        with noise.active(step=1, micro_batch=0):
            first, again = model(x).logits, model(x).logits
        with noise.active(step=1, micro_batch=0):
            later = model(x).logits
        with noise.active(step=1, micro_batch=1):
            other_micro_batch = model(x).logits
        with noise.active(step=2, micro_batch=0):
            other_step = model(x).logits
        noise.seed = 1
        with noise.active(step=1, micro_batch=0):
            other_seed = model(x).logits
    assert torch.equal(first, again) and torch.equal(first, later)
    for other in (other_micro_batch, other_step, other_seed):
        assert not torch.allclose(first, other)
    assert len({noise_seed(0, 1, 0, layer) for layer in range(30)}) == 30


def _loss_and_grads(model, noise, x, checkpointed: str | None):
    model.zero_grad()
    noise.zero_grad()
    if checkpointed == "transformers":
        model.gradient_checkpointing_enable()
    elif checkpointed == "reentrant":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    with noise.active(step=4, micro_batch=1):
        if checkpointed == "whole model":   # the hooks themselves re-run in the recomputation
            loss = checkpoint(loss_of, model, x, use_reentrant=False)
            loss.backward()
        else:
            loss = loss_of(model, x)
    if checkpointed != "whole model":
        loss.backward()                     # outside active(): transformers recomputes the layer, not the hooks
    model.gradient_checkpointing_disable()
    weight_grad = decoder_layers(model)[0].self_attn.q_proj.weight.grad.clone()
    return loss.detach(), noise.log_sigma.grad.clone(), weight_grad


@pytest.mark.parametrize("checkpointed", ["transformers", "reentrant", "whole model"])
def test_gradient_checkpointing_sees_the_same_noise(checkpointed):
    model, x = llama().train(), ids()   # Llama has no dropout: train mode only switches checkpointing on
    noise = LayerwiseNoise(model, sigma=0.1)
    loss, sigma_grad, weight_grad = _loss_and_grads(model, noise, x, None)
    layer = decoder_layers(model)[0]
    calls = {"hooks": 0, "attention": 0}
    layer.register_forward_pre_hook(lambda m, a: calls.__setitem__("hooks", calls["hooks"] + 1))
    layer.self_attn.register_forward_pre_hook(lambda m, a, k: calls.__setitem__("attention", calls["attention"] + 1),
                                              with_kwargs=True)
    ck_loss, ck_sigma_grad, ck_weight_grad = _loss_and_grads(model, noise, x, checkpointed)
    # The layer is recomputed in backward; transformers re-runs its forward only, a whole-model checkpoint the hooks.
    assert calls == {"hooks": 2 if checkpointed == "whole model" else 1, "attention": 2}
    assert torch.allclose(loss, ck_loss, rtol=1e-6, atol=0)
    assert torch.allclose(sigma_grad, ck_sigma_grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(weight_grad, ck_weight_grad, rtol=1e-5, atol=1e-6)
    assert torch.all(sigma_grad != 0)


# ------------------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("lora", [False, True], ids=["plain", "lora"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_decoder_layers_found_on_every_architecture(name, lora):
    model, x = build(name), ids()
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules=ARCHITECTURES[name][3]))
    layers = decoder_layers(model)
    assert len(layers) == 2 and {type(layer).__name__ for layer in layers} == {ARCHITECTURES[name][4]}
    with torch.no_grad():
        plain = model(input_ids=x).logits
        noise = LayerwiseNoise(model, sigma=0.1)
        with noise.active():
            noisy = model(input_ids=x).logits
        assert torch.equal(model(input_ids=x).logits, plain)
        noise.remove()
        assert torch.equal(model(input_ids=x).logits, plain)
    assert not torch.allclose(noisy, plain)


def test_a_model_without_decoder_layers_is_a_clear_error():
    with pytest.raises(ValueError, match="Linear.*no config"):
        LayerwiseNoise(nn.Linear(4, 4))

    class SequentialDecoder(nn.Module):
        """Layers in an nn.Sequential, not a ModuleList: nothing to hook generically."""

        def __init__(self):
            super().__init__()
            self.config = transformers.LlamaConfig(num_hidden_layers=2)
            self.layers = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))

    with pytest.raises(ValueError, match="SequentialDecoder.*ModuleList of 2 layers"):
        LayerwiseNoise(SequentialDecoder())


# --------------------------------------------------------------------------- options and checkpointing


def test_layer_selection_hooks_only_the_chosen_layers():
    model = llama()
    layers = decoder_layers(model)
    noise = LayerwiseNoise(model, layers=(1, 2))
    assert noise.layer_indices == [1] and len(noise.sigmas()) == 1
    assert not layers[0]._forward_pre_hooks and len(layers[1]._forward_pre_hooks) == 1
    noise.remove()
    assert LayerwiseNoise(model, layers=[1, 0]).layer_indices == [0, 1]
    for bad in [(1, 1), (0, 3), (0,), [], [2], [0, 0], (0.0, 1)]:
        with pytest.raises(ValueError, match="layers"):
            LayerwiseNoise(model, layers=bad)
    with pytest.raises(ValueError, match="2 sigmas for 1 selected layers"):
        LayerwiseNoise(model, sigma=[0.1, 0.2], layers=[0])
    with pytest.raises(ValueError, match="> 0 when learnable"):
        LayerwiseNoise(model, sigma=0.0)


def test_regulariser_by_hand():
    noise = LayerwiseNoise(llama(), sigma=[0.5, 2.0])
    by_hand = ((0.1 * 0.25 - 0.01 * math.log(0.25)) + (0.1 * 4.0 - 0.01 * math.log(4.0))) / 2
    value = noise.regulariser(alpha=0.1, beta=0.01)
    assert value.item() == pytest.approx(by_hand, rel=1e-6)
    value.backward()   # d/d log σ = 2 α σ² − 2 β, over the layer count
    assert noise.log_sigma.grad.tolist() == pytest.approx([(0.2 * 0.25 - 0.02) / 2, (0.2 * 4.0 - 0.02) / 2], rel=1e-5)


def test_parameters_and_state_dict_round_trip_sigma_bit_exactly():
    model = llama()
    noise = LayerwiseNoise(model, sigma=1e-3)
    assert [p is noise.log_sigma for p in noise.parameters()] == [True]
    with torch.no_grad():
        noise.log_sigma.copy_(torch.tensor([-7.123456789, -2.5]))
    state = noise.state_dict()
    assert list(state) == ["log_sigma"]
    restored = LayerwiseNoise(model, sigma=0.5)
    restored.load_state_dict(state)
    assert torch.equal(restored.log_sigma, noise.log_sigma) and restored.sigmas() == noise.sigmas()
    fixed = LayerwiseNoise(model, sigma=0.2, learnable=False)
    assert list(fixed.parameters()) == [] and list(fixed.state_dict()) == ["log_sigma"]


# ------------------------------------------------------------------------------------ ratio helpers


def test_sequence_form_takes_its_value_from_the_sequence_and_its_gradient_token_wise():
    log_ratio = torch.randn(2, 5, dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.float64)
    for geometric in (True, False):
        out = sequence_token_log_ratio(log_ratio, mask, geometric=geometric)
        row = (log_ratio * mask).sum(-1) / (mask.sum(-1) if geometric else 1)
        assert torch.allclose(torch.exp(out), torch.where(mask > 0, torch.exp(row)[:, None], torch.ones(2, 5)))
        jacobian = torch.autograd.functional.jacobian(
            lambda r, g=geometric: sequence_token_log_ratio(r, mask, geometric=g), log_ratio)
        assert torch.equal(jacobian.reshape(10, 10), torch.diag(mask.flatten()))


def test_log_ratio_clamp_and_the_defaults_window_in_the_shared_dual_clip_loss():
    log_ratio = torch.tensor([-30.0, 0.5, 25.0], requires_grad=True)
    clamped = clamp_log_ratio(log_ratio)
    clamped.sum().backward()
    assert clamped.tolist() == [-20.0, 0.5, 20.0] and log_ratio.grad.tolist() == [0.0, 1.0, 0.0]
    d = ALP_DEFAULTS
    assert (1 - d["clip_low"], 1 + d["clip_high"]) == (0.5, 4.0)
    ratio = torch.tensor([0.2, 5.0, 5.0, 2.0])
    advantage = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, clipped = ppo_clip_loss(ratio, advantage, d["clip_low"], d["clip_high"], d["dual_clip"])
    # A > 0: min(r, clip(r)) -> 0.2 and 4.0; A < 0 with r = 5: bounded by c = 3; r = 2 inside the window.
    assert loss.tolist() == pytest.approx([-0.2, -4.0, 3.0, 2.0])
    assert clipped.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_the_sequence_log_ratio_is_clamped_after_it_is_summed():
    """The authors clamp the sequence's log ratio, not each token's: 30 tokens of log ratio 1 sum to 30 > 20."""
    from turnrl.algorithms.trainer import alp_log_ratio

    log_ratio = torch.ones(1, 32, requires_grad=True)
    mask = torch.ones(1, 32)
    mask[0, :2] = 0
    value = alp_log_ratio("sequence")(log_ratio, None, mask)
    assert torch.equal(value, torch.cat([torch.zeros(2), torch.full((30,), 20.0)]).view(1, 32))
    value.sum().backward()
    assert torch.equal(log_ratio.grad, torch.zeros(1, 32))   # clamped: no gradient, as torch.clamp gives
    small = (torch.full((1, 4), 0.1, requires_grad=True), torch.ones(1, 4))
    assert torch.allclose(alp_log_ratio("sequence")(small[0], None, small[1]), torch.full((1, 4), 0.4))

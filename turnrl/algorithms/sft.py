"""Behaviour cloning from expert episodes with TRL's `SFTTrainer`.

Expert episodes are played through the same rollout code as training (the expert writes
`<action>…</action>` as the model's response), so demonstrations have exactly the prompt format and
token layout of rollouts in the chosen context mode. The dataset is pre-tokenized: `input_ids` and
`labels` with -100 everywhere except the agent's tokens, so only agent turns are learned.
"""

from __future__ import annotations

from pathlib import Path

import torch

from turnrl.agents.models import load_model, save_model
from turnrl.agents.policy import ExpertPolicy
from turnrl.agents.prompts import PromptBuilder
from turnrl.agents.rollout import evaluate
from turnrl.environments import make_env
from turnrl.episode import Episode, episode_samples


def expert_demonstrations(tokenizer, env_name: str, tasks: list, *, env_kwargs: dict | None = None,
                          context: str = "full", max_turns: int = 10, seed: int = 0,
                          prompt_builder: PromptBuilder | None = None, batch_size: int = 64) -> list[Episode]:
    """Expert episodes of `tasks` with the token ids a model would have produced."""
    return evaluate(ExpertPolicy(tokenizer), env_name, tasks, env_kwargs=env_kwargs, context=context,
                    max_turns=max_turns, seed=seed, prompt_builder=prompt_builder, batch_size=batch_size)


def demonstration_dataset(episodes: list[Episode], *, successful_only: bool = True):
    """A `datasets.Dataset` of input_ids/labels, agent tokens labelled, everything else -100."""
    from datasets import Dataset

    rows = {"input_ids": [], "labels": []}
    for index, episode in enumerate(episodes):
        if successful_only and not episode.success:
            continue
        for sample in episode_samples(episode, [0.0] * len(episode.turns), index):
            rows["input_ids"].append(sample.token_ids)
            rows["labels"].append([t if m else -100 for t, m in zip(sample.token_ids, sample.loss_mask)])
    if not rows["input_ids"]:
        raise ValueError("no successful expert episodes to learn from")
    return Dataset.from_dict(rows)


CHECKPOINT_ABOVE = 6_000_000   # batch x longest sequence², above which behaviour cloning checkpoints activations


def needs_checkpointing(dataset, batch_size: int) -> bool:
    """Whether a batch of the longest demonstrations would hold too many attention activations without
    checkpointing. Measured on SmolLM2-135M in float32 (2 CPU cores, 24 GB): WebShop's full-context demonstrations
    (longest 2,343 tokens, batch 4: 22M) ran out of memory in the fourth step, ALFWorld's (1,114 tokens, batch 4:
    5M) trained in 416 s; search-QA's (727 tokens, 2M) are the quickstart."""
    longest = max((len(ids) for ids in dataset["input_ids"]), default=0)
    return batch_size * longest ** 2 > CHECKPOINT_ABOVE


def behaviour_clone(model, tokenizer, dataset, *, output_dir: str | Path, epochs: float = 1.0,
                    learning_rate: float = 1e-4, batch_size: int = 8, seed: int = 0, progress: bool = True):
    """Train `model` in place on a `demonstration_dataset` with TRL's `SFTTrainer`; returns it in eval mode.
    `turnrl sft` and the warm start of `turnrl train` both come through here."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(Path(output_dir)), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, logging_steps=10, save_strategy="no", report_to=[],
        seed=seed, max_length=None, disable_tqdm=not progress, lr_scheduler_type="constant",
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        # TRL turns activation checkpointing on by default: a second forward per step, for memory that short
        # demonstrations do not need; long ones do (needs_checkpointing).
        gradient_checkpointing=needs_checkpointing(dataset, batch_size), dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return model.eval()


def run_sft(*, env: str, model: str, episodes: int, output_dir: str | Path, env_kwargs: dict | None = None,
            split: str = "train", context: str = "full", max_turns: int = 10, epochs: float = 1.0,
            learning_rate: float = 1e-4, batch_size: int = 8, lora: bool = False, lora_rank: int = 8,
            seed: int = 0, show_admissible_actions: bool = True, prompt_style: str = "compact",
            progress: bool = True) -> Path:
    """Behaviour-clone `model` on `episodes` expert episodes; the result is saved in `output_dir`."""
    policy_model, tokenizer = load_model(model, lora=lora, lora_rank=lora_rank, progress=progress)
    demos = expert_demonstrations(tokenizer, env, demonstration_tasks(env, env_kwargs, split, episodes),
                                  env_kwargs=env_kwargs, context=context, max_turns=max_turns, seed=seed,
                                  prompt_builder=PromptBuilder(show_admissible=show_admissible_actions,
                                                               style=prompt_style))
    output_dir = Path(output_dir)
    behaviour_clone(policy_model, tokenizer, demonstration_dataset(demos), output_dir=output_dir / "trainer",
                    epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed, progress=progress)
    save_model(policy_model, tokenizer, output_dir / "final", model)
    return output_dir / "final"


def demonstration_tasks(env: str, env_kwargs: dict | None, split: str, episodes: int) -> list:
    """The first `episodes` tasks of a split, cycling when the split is shorter."""
    tasks = list(make_env(env, **(env_kwargs or {})).tasks(split))
    return [tasks[i % len(tasks)] for i in range(episodes)]

"""Step-level DPO on search preference pairs through TRL's `DPOTrainer`, and the Agent Q loop.

**DPO** (Agent Q, Putta et al. 2024, Eq. 5):
L = −E log σ( β log π_θ(a^w|h)/π_ref(a^w|h) − β log π_θ(a^l|h)/π_ref(a^l|h) ), over the pairs of
`turnrl.search.preferences` (h the node's prompt, a^w/a^l two sibling responses; log π sums every generated
token, thought and action alike, as the paper's Eq. 1). The pairs are fed to TRL as the exact token ids the
policy generated (`prompt_ids`, `chosen_ids`, `rejected_ids`), never re-tokenized from text. The reference:

- `recompute` (default): TRL computes it: with LoRA, the model with the adapter switched off (or, when
  training further an adapter loaded from a folder, TRL's frozen copy of it); without LoRA, a frozen copy.
- `behaviour`: the summed behaviour log-probs recorded when the search generated the responses, the paper's
  off-policy choice (π_ref ← π_θ_i, the policy that searched; no reference forward at all). TRL scores log π_θ
  at temperature 1, so this needs pairs searched at temperature 1 and is refused otherwise.

β is not given in the paper; the default 0.1 is TRL's and the usual one.

**The Agent Q loop** (Alg. 1; `turnrl agentq --config configs/webshop_agentq.yaml`): each iteration searches a
batch of tasks with the current policy, then uses the search data one of two ways (`use`):
- `dpo`: step-level DPO on the pairs;
- `policy-gradient`: `turnrl train` with `search_episodes` set to the iteration's best trajectories, which join
  the trainer's batches as off-policy data with their behaviour log-probs (the trainer's ratio corrections);
and evaluates the result (`eval_episodes`, greedy; with `eval_simulations` > 0 also acting by search).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from turnrl.agents.models import load_model, save_model
from turnrl.agents.policy import Policy, pad_right, token_logprobs

REFERENCES = ("recompute", "behaviour")
USES = ("dpo", "policy-gradient")
PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def _trainer_class():
    from trl import DPOTrainer

    class StepDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer fed pre-tokenized pairs: the dataset already holds the generated ids (and, for the
        behaviour reference, the reference log-probs), so TRL's text tokenization and reference precomputation
        are skipped for it; everything else (collator, loss, LoRA reference) is TRL's."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if "ref_chosen_logps" in dataset.column_names:
                return dataset
            return super()._precompute_ref_logps(dataset, name, batch_size)

    return StepDPOTrainer


def dpo_dataset(pairs, reference: str = "recompute"):
    """The columns TRL's preference collator reads, from a `preference_dataset` (or its folder)."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)} (got {reference!r})")
    missing = [c for c in PAIR_COLUMNS if c not in pairs.column_names]
    if missing:
        raise ValueError(f"the pairs lack {', '.join(missing)}: use the pairs/ folder that `turnrl search` writes")
    columns = list(PAIR_COLUMNS)
    data = pairs
    if reference == "behaviour":
        temperatures = set(pairs["temperature"]) if "temperature" in pairs.column_names else {None}
        if temperatures != {1.0}:
            raise ValueError(f"reference behaviour needs pairs searched at temperature 1 (TRL scores the policy at "
                             f"temperature 1); these were searched at {sorted(map(str, temperatures))}. Use "
                             "reference recompute, or search with --temperature 1")
        data = pairs.rename_columns({"chosen_logps": "ref_chosen_logps", "rejected_logps": "ref_rejected_logps"})
        columns += ["ref_chosen_logps", "ref_rejected_logps"]
    return data.select_columns(columns)


def chosen_margins(model, tokenizer, pairs, batch_size: int = 8) -> list[float]:
    """log π(chosen | prompt) − log π(rejected | prompt) of each pair, summed over the response tokens."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device

    def scores(prompts, responses):
        out = []
        for start in range(0, len(prompts), batch_size):
            chunk = [p + r for p, r in zip(prompts[start: start + batch_size], responses[start: start + batch_size])]
            ids, mask = pad_right(chunk, pad)
            with torch.no_grad():
                lp = token_logprobs(model, ids.to(device), mask.to(device))
            for row, (p, r) in enumerate(zip(prompts[start: start + batch_size], responses[start: start + batch_size])):
                out.append(float(lp[row, len(p) - 1: len(p) + len(r) - 1].sum()))
        return out

    prompts = list(pairs["prompt_ids"])
    chosen, rejected = scores(prompts, list(pairs["chosen_ids"])), scores(prompts, list(pairs["rejected_ids"]))
    return [c - r for c, r in zip(chosen, rejected)]


def dpo_train(model, tokenizer, pairs, *, output_dir: str | Path, beta: float = 0.1, reference: str = "recompute",
              epochs: float = 1.0, learning_rate: float = 5e-5, batch_size: int = 8, seed: int = 0,
              progress: bool = True) -> dict:
    """Train `model` in place with step-level DPO on `pairs`; returns the last logged metrics."""
    from trl import DPOConfig

    if len(pairs) == 0:
        raise ValueError("no preference pairs to train on (the search found no siblings with |ΔQ| > θ: search more "
                         "tasks or simulations, or lower the threshold)")
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (got {beta})")
    data = dpo_dataset(pairs, reference)
    args = DPOConfig(
        output_dir=str(output_dir), beta=beta, num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, logging_steps=1, save_strategy="no", report_to=[], seed=seed,
        max_length=None, precompute_ref_log_probs=reference == "behaviour", gradient_checkpointing=False,
        disable_tqdm=not progress, lr_scheduler_type="constant",
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = _trainer_class()(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    model.eval()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return logs[-1] if logs else {}


def load_pairs(path: str | Path):
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_info.json").is_file():
        raise FileNotFoundError(f"{path} is not a saved dataset: give the pairs/ folder of `turnrl search`")
    return load_from_disk(str(path))


def run_dpo(*, model: str, pairs: str | Path, output_dir: str | Path, lora: bool = True, lora_rank: int = 8,
            beta: float = 0.1, reference: str = "recompute", epochs: float = 1.0, learning_rate: float = 5e-5,
            batch_size: int = 8, seed: int = 0, progress: bool = True) -> dict:
    """`turnrl dpo`: train `model` on a pairs folder; the result goes to OUTPUT_DIR/final. Returns a summary with
    the mean chosen-over-rejected margin before and after."""
    data = load_pairs(pairs)
    policy_model, tokenizer = load_model(model, lora=lora, lora_rank=lora_rank, progress=progress)
    before = chosen_margins(policy_model, tokenizer, data)
    output_dir = Path(output_dir)
    metrics = dpo_train(policy_model, tokenizer, data, output_dir=output_dir / "trainer", beta=beta,
                        reference=reference, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                        seed=seed, progress=progress)
    after = chosen_margins(policy_model, tokenizer, data)
    save_model(policy_model, tokenizer, output_dir / "final", model)
    return {"pairs": len(data), "beta": beta, "reference": reference,
            "margin_before": sum(before) / len(before), "margin_after": sum(after) / len(after),
            "final_loss": metrics.get("loss"), "model": str(output_dir / "final")}


# --- the Agent Q loop --------------------------------------------------------------------------------------


@dataclass
class AgentQConfig:
    """`turnrl agentq` settings (YAML keys). Search constants: `turnrl.search.mcts.SearchConfig`."""

    env: str = "lights"
    env_kwargs: dict = field(default_factory=dict)
    env_module: str | None = None
    model: str = "tiny"
    lora: bool = True
    lora_rank: int = 8
    iterations: int = 1                 # Alg. 1's N
    tasks_per_iteration: int = 8        # Alg. 1's B
    split: str = "train"
    context: str = "full"
    prompt_style: str = "compact"
    max_turns: int = 10
    max_new_tokens: int = 64
    temperature: float = 1.0            # proposals and rollouts; 1.0 keeps `reference: behaviour` possible
    simulations: int = 16
    branching: int = 4
    expansion_rounds: int = 2
    exploration: float = 1.0
    alpha: float = 0.5
    rank_value: str = "linear"
    threshold: float = 0.1              # θ of the preference pairs
    use: str = "dpo"                    # dpo or policy-gradient
    beta: float = 0.1
    reference: str = "recompute"
    dpo_epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 8
    trainer: dict = field(default_factory=dict)   # use policy-gradient: `turnrl train` keys (default st-ppo, 1 iteration)
    eval_episodes: int = 8
    eval_split: str = "test"
    eval_simulations: int = 0           # > 0: also evaluate acting by search at this budget per step
    seed: int = 0
    output_dir: str = "runs/agentq"

    def __post_init__(self):
        if self.use not in USES:
            raise ValueError(f"use must be one of {', '.join(USES)} (got {self.use!r})")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCES)} (got {self.reference!r})")
        if self.iterations < 1 or self.tasks_per_iteration < 1:
            raise ValueError("iterations and tasks_per_iteration must be >= 1")

    def search_config(self):
        from turnrl.search import SearchConfig

        return SearchConfig(simulations=self.simulations, branching=self.branching,
                            expansion_rounds=self.expansion_rounds, exploration=self.exploration, alpha=self.alpha,
                            rank_value=self.rank_value, max_turns=self.max_turns, context=self.context)


def load_agentq_config(path: str | Path | None, overrides: dict | None = None) -> AgentQConfig:
    """An AgentQConfig from a YAML file and overrides; an unknown key is an error naming the valid ones."""
    import yaml

    values = dict(yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    values.update(overrides or {})
    names = [f.name for f in fields(AgentQConfig)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown agentq config key(s) {', '.join(unknown)}; valid keys: {', '.join(names)}")
    return AgentQConfig(**values)


def parse_agentq_overrides(args: list[str]) -> dict:
    """`["--iterations", "2", "--use=policy-gradient"]` -> {"iterations": 2, "use": "policy-gradient"} (values read as
    YAML; the keys are checked by `load_agentq_config`)."""
    import yaml

    overrides, i = {}, 0
    while i < len(args):
        if not args[i].startswith("--"):
            raise ValueError(f"expected --key value, got {args[i]!r}")
        key, equals, raw = args[i][2:].partition("=")
        if not equals:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ValueError(f"--{key} needs a value")
            raw, i = args[i + 1], i + 1
        overrides[key.replace("-", "_")] = yaml.safe_load(raw)
        i += 1
    return overrides


def run_agentq(config: AgentQConfig, *, progress: bool = True) -> dict:
    """Alg. 1: N iterations of search → (DPO | policy-gradient) → evaluation. Writes OUTPUT_DIR/iter_i/ (the
    search outputs, the trained model), OUTPUT_DIR/search/iter_i.jsonl (the trees, for `turnrl report`) and
    OUTPUT_DIR/agentq.jsonl (one row per evaluation); returns the summary table."""
    from turnrl.agents.prompts import PromptBuilder
    from turnrl.environments import make_env
    from turnrl.search import run_search

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    builder = PromptBuilder(style=config.prompt_style)
    split_tasks = list(make_env(config.env, **config.env_kwargs).tasks(config.split))
    eval_tasks = list(make_env(config.env, **config.env_kwargs).tasks(config.eval_split))[: config.eval_episodes]
    current = config.model
    rows = [_evaluate(config, current, eval_tasks, builder, iteration=0, progress=progress)]
    for iteration in range(1, config.iterations + 1):
        folder = out / f"iter_{iteration}"
        model, tokenizer = _load(current, progress)
        policy = Policy(model, tokenizer, temperature=config.temperature, max_new_tokens=config.max_new_tokens)
        offset = (iteration - 1) * config.tasks_per_iteration
        tasks = [split_tasks[(offset + k) % len(split_tasks)] for k in range(config.tasks_per_iteration)]
        summary = run_search(policy, config.env, tasks, config.search_config(), folder, env_kwargs=config.env_kwargs,
                             threshold=config.threshold, seed=config.seed + iteration, builder=builder)
        (out / "search").mkdir(exist_ok=True)
        (out / "search" / f"iter_{iteration}.jsonl").write_text((folder / "trees.jsonl").read_text())
        del policy, model
        if config.use == "dpo" and summary["pairs"] == 0:
            result = {"skipped": "no preference pairs: the policy is unchanged this iteration"}
        elif config.use == "dpo":
            result = run_dpo(model=current, pairs=folder / "pairs", output_dir=folder, lora=config.lora,
                             lora_rank=config.lora_rank, beta=config.beta, reference=config.reference,
                             epochs=config.dpo_epochs, learning_rate=config.learning_rate,
                             batch_size=config.batch_size, seed=config.seed, progress=progress)
            current = result["model"]
        else:
            result = {"run_dir": str(_train_on_search(config, current, folder / "episodes.jsonl", folder / "train",
                                                         progress))}
            current = str(Path(result["run_dir"]) / "final")
        rows.append(_evaluate(config, current, eval_tasks, builder, iteration, progress,
                              extra={"pairs": summary["pairs"], "search_best_success_rate": summary["best_success_rate"],
                                     **{k: v for k, v in result.items() if k != "model"}}))
    return {"use": config.use, "iterations": rows, "model": current}


def _load(name: str, progress: bool):
    from turnrl.agents.models import load_trained

    return load_trained(name) if Path(name).is_dir() else load_model(name, progress=progress)


def _train_on_search(config: AgentQConfig, model: str, episodes: Path, output_dir: Path, progress: bool) -> Path:
    """`turnrl train` through its config layer, with the search episodes as off-policy data (default preset st-ppo:
    a turn-level critic, since one best episode per task forms no advantage group)."""
    from turnrl.algorithms.config import load_config
    from turnrl.algorithms.trainer import train

    overrides = {"algorithm": "st-ppo", "iterations": 1, **config.trainer,
                 "env": config.env, "env_kwargs": config.env_kwargs, "model": model, "lora": config.lora,
                 "context": config.context, "max_turns": config.max_turns, "max_new_tokens": config.max_new_tokens,
                 "prompt_style": config.prompt_style, "search_episodes": str(episodes), "seed": config.seed,
                 "output_dir": str(output_dir)}
    if config.env_module:
        overrides["env_module"] = config.env_module
    return Path(train(load_config(None, overrides), progress=progress))


def _evaluate(config: AgentQConfig, model_name: str, tasks: list, builder, iteration: int, progress: bool,
              extra: dict | None = None) -> dict:
    from turnrl.agents.rollout import evaluate
    from turnrl.episode import summarize

    row = {"iteration": iteration, "model": model_name, **(extra or {})}
    if not tasks:
        return row
    model, tokenizer = _load(model_name, progress)
    greedy = Policy(model, tokenizer, temperature=0.0, max_new_tokens=config.max_new_tokens)
    played = evaluate(greedy, config.env, tasks, env_kwargs=config.env_kwargs, context=config.context,
                      max_turns=config.max_turns, seed=config.seed, prompt_builder=builder)
    row["success_rate"] = summarize(played)["success_rate"]
    if config.eval_simulations > 0:
        from dataclasses import replace

        from turnrl.search import act_by_search

        sampler = Policy(model, tokenizer, temperature=config.temperature, max_new_tokens=config.max_new_tokens)
        searched, trees = act_by_search(sampler, config.env, tasks,
                                        replace(config.search_config(), simulations=config.eval_simulations),
                                        env_kwargs=config.env_kwargs, seed=config.seed, builder=builder)
        row["search_success_rate"] = summarize(searched)["success_rate"]
        row["search_env_steps"] = sum(t.env_steps for t in trees)
    with (Path(config.output_dir) / "agentq.jsonl").open("a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
    return row

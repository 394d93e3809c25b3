"""The policy-gradient loop: roll out -> advantages -> epochs of minibatch updates -> log -> checkpoint.

Read it top to bottom in `train`. Advantages from `advantages.py` (GRPO or RLOO episode advantages,
GiGPO or HGPO step advantages; `episode_turn_advantages`) with the token-level PPO clipped objective (`objectives.py`) over agent tokens only, optional k3 KL to the
reference (the LoRA adapter switched off, or a frozen copy of the starting weights).

Built on accelerate: one CPU process by default, `accelerate launch -m turnrl.cli train ...` for
several processes. Each process rolls out whole groups (tasks are dealt round-robin), computes
advantages for its own groups, and the trainer averages the gradients over processes itself (`Trainer.sync_gradients`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

from turnrl.agents.models import default_cache_dir, load_model, save_model
from turnrl.agents.policy import Policy, keyed_generator, pad_right, positions_from_mask, token_logprobs
from turnrl.agents.prompts import PromptBuilder
from turnrl.agents.rollout import evaluate, group_specs, replace_env, rollout
from turnrl.algorithms import sharding
from turnrl.algorithms.advantages import (
    gigpo_advantages,
    grpo_step_advantages,
    hgpo_advantages,
    hgpo_level_stats,
    rloo_advantages,
)
from turnrl.algorithms.alp import NO_NOISE, LayerwiseNoise, clamp_log_ratio, sequence_token_log_ratio
from turnrl.algorithms.config import EVAL_PHASES, TrainConfig
from turnrl.algorithms.critic import Critic, advantage_moments, clipped_value_loss, episode_gae, turn_starts, whiten
from turnrl.algorithms.objectives import RATIO_LEVELS, clip_bias_loss, clip_bias_scale, kl_k3, ppo_clip_loss
from turnrl.algorithms.replay import ReplayBuffer
from turnrl.algorithms.sft import behaviour_clone, demonstration_dataset, demonstration_tasks, expert_demonstrations
from turnrl.environments import load_env_module, make_env
from turnrl.episode import Episode, Sample, episode_samples, summarize
from turnrl.outputs import check_writable, write_text_atomic
from turnrl.progress import PhaseProgress


def episode_turn_advantages(config: TrainConfig, episodes: list[Episode]) -> list[list[float]]:
    """Per-turn advantages for each episode, as selected by `config.advantage`.

    grpo and rloo give every turn its episode's advantage (return = rewards minus penalties); gigpo and
    hgpo give each turn its own, from the observations the agent saw (the environment's text), the
    rewards and the penalties of the turns. In `window:k` mode each turn is one training sample; in
    `full` mode a turn's advantage applies to that turn's tokens.
    """
    groups = [e.group_id for e in episodes]
    observations, rewards, penalties = _turn_lists(episodes)
    if config.advantage == "rloo":
        per_episode = rloo_advantages([e.total_reward - e.total_penalty for e in episodes], groups)
        return [[adv] * len(e.turns) for adv, e in zip(per_episode, episodes)]
    if config.advantage == "grpo":   # paper: the episode's return on every turn; verl-agent: minus that turn's penalty
        return grpo_step_advantages(rewards, groups, norm=config.advantage_norm, penalties=penalties,
                                    conventions=config.conventions)
    if config.advantage == "gigpo":
        return gigpo_advantages(observations, rewards, groups, gamma=config.gamma, omega=config.step_advantage_weight,
                                norm=config.advantage_norm, penalties=penalties, conventions=config.conventions)
    return hgpo_advantages(observations, rewards, groups, history_length=config.history_length, gamma=config.gamma,
                           alpha=config.hgpo_alpha, norm=config.advantage_norm, base_group=config.hgpo_base_group,
                           penalties=penalties, conventions=config.conventions)


def _turn_lists(episodes: list[Episode]) -> tuple[list[list[str]], list[list[float]], list[list[float]]]:
    return ([[t.observation for t in e.turns] for e in episodes], [[t.reward for t in e.turns] for e in episodes],
            [[t.penalty for t in e.turns] for e in episodes])


def step_group_counts(config: TrainConfig, episodes: list[Episode]) -> dict[str, float]:
    """Sums behind the step-group metrics of gigpo/hgpo (summed across processes, then divided): per level k,
    steps that have the level and the total size of their groups; steps with n valid levels. GiGPO's
    anchor-state groups are level 0. Empty for episode-level advantages."""
    if config.advantage not in ("gigpo", "hgpo"):
        return {}
    depth = config.history_length if config.advantage == "hgpo" else 0
    observations, rewards, penalties = _turn_lists(episodes)
    stats = hgpo_level_stats(observations, rewards, [e.group_id for e in episodes], history_length=depth,
                             gamma=config.gamma, penalties=penalties)
    steps = sum(len(obs) for obs in observations)
    counts = {"group_steps": float(steps)}
    for k in range(depth + 1):
        with_level = sum(max(len(obs) - k, 0) for obs in observations)
        counts[f"level{k}_steps"] = float(with_level)
        counts[f"level{k}_size_sum"] = stats[f"level{k}_group_size"] * with_level
    for n in range(depth + 2):
        counts[f"valid{n}_steps"] = stats[f"steps_with_{n}_valid_levels"] * steps
    return counts


def step_group_metrics(counts: dict[str, float]) -> dict[str, float]:
    """`level{k}_group_size` (mean size of a step's level-k group) and `steps_with_{n}_valid_levels`."""
    metrics = {}
    for key, value in counts.items():
        if key.endswith("_size_sum"):
            level = key[: -len("_size_sum")]
            metrics[f"{level}_group_size"] = value / max(counts[f"{level}_steps"], 1.0)
        elif key.startswith("valid"):
            metrics[f"steps_with_{key[5:-6]}_valid_levels"] = value / max(counts["group_steps"], 1.0)
    return metrics


RATIO_TAIL_KEYS = ("ratio_p1", "ratio_p50", "ratio_p99", "abs_log_ratio_p99", "ratio_ess")


def ratio_tail(ratios: torch.Tensor) -> dict[str, float]:
    """Percentiles of the importance ratios an update used (over agent tokens, every epoch), the p99 of
    |log ratio| (where off-policy drift shows first) and the normalised effective sample size of the ratios,
    (Σw)² / (n Σw²), 1 when all are equal."""
    w = ratios.double()
    q = torch.quantile(w, torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64))
    abs_log = torch.quantile(w.log().abs(), 0.99)
    ess = float(w.sum() ** 2 / (len(w) * (w ** 2).sum()))
    return dict(zip(RATIO_TAIL_KEYS, [float(v) for v in q] + [float(abs_log), ess]))


def alp_log_ratio(level: str):
    """ALP's log ratio of the perturbed policy over the behaviour policy: at sequence level its value comes from the
    sequence and its gradient token-wise (Seq-ALP); token and turn as elsewhere. Clamped against overflow after it
    is formed, as the authors clamp (the sum over a sequence's tokens is what could overflow exp)."""
    if level == "sequence":
        return lambda log_ratio, turn_index, mask: clamp_log_ratio(sequence_token_log_ratio(log_ratio, mask))
    return lambda log_ratio, turn_index, mask: clamp_log_ratio(RATIO_LEVELS[level](log_ratio, turn_index, mask))


def _turn_count(sample: Sample) -> int:
    """The turns a sample holds (maximal runs of one turn index on agent tokens)."""
    return sum(1 for i, t in enumerate(sample.turn_index) if t >= 0 and (i == 0 or sample.turn_index[i - 1] != t))


def _groups(episodes: list[Episode]) -> list[list[Episode]]:
    """Episodes by group id, in order of first appearance."""
    groups: dict[int, list[Episode]] = {}
    for episode in episodes:
        groups.setdefault(episode.group_id, []).append(episode)
    return list(groups.values())


@dataclass
class TrainBatch:
    """Right-padded tensors of a micro-batch, aligned so that position i describes token i + 1 (what log-probs
    score): the ids and attention of the sequences, then per scored token the loss mask, the turn index (-1
    off agent tokens), the behaviour log-prob, the advantage and the loss weight."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    turn_index: torch.Tensor
    behaviour: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor
    policy_version: torch.Tensor      # [B]: the policy version that generated each sample
    old_values: torch.Tensor          # with a critic: the turn's value at rollout (0 without)
    value_targets: torch.Tensor       # with a critic: the turn's GAE value target (0 without)


def make_batch(samples: list[Sample], token_weights: list[float], pad_id: int, device) -> TrainBatch:
    ids, attention = pad_right([s.token_ids for s in samples], pad_id)

    def per_token(name: str, dtype, fill=0) -> torch.Tensor:
        out = torch.full(ids.shape, fill, dtype=dtype)
        for row, sample in enumerate(samples):
            values = getattr(sample, name)
            out[row, : len(values)] = torch.tensor(values, dtype=dtype)
        return out[:, 1:].to(device)

    loss_mask = per_token("loss_mask", torch.float32)
    return TrainBatch(
        input_ids=ids.to(device), attention_mask=attention.to(device), loss_mask=loss_mask,
        turn_index=per_token("turn_index", torch.long, fill=-1), behaviour=per_token("behaviour_logprobs", torch.float32),
        advantages=per_token("advantages", torch.float32),
        weights=loss_mask * torch.tensor(token_weights, dtype=torch.float32, device=device)[:, None],
        policy_version=torch.tensor([s.policy_version for s in samples], dtype=torch.long, device=device),
        old_values=per_token("old_values", torch.float32), value_targets=per_token("value_targets", torch.float32),
    )


class ClipBiasNormaliser:
    """S-PPO/ST-PPO clipping-bias normalisation: accumulates C(θ), the gradient of `clip_bias_loss` over a
    minibatch's micro-batches (one extra backward each), then scales the policy gradient by
    `clip_bias_scale(‖C‖, τ)` before gradient clipping and the optimizer step. Under several processes the C
    gradients are summed across processes first, like the policy gradient. (With AdamW a constant scale
    mostly cancels; what acts is the scale's change from step to step against Adam's running moments.)"""

    def __init__(self, params: list[torch.nn.Parameter], tau: float, accelerator: Accelerator):
        self.params, self.tau, self.accelerator = params, tau, accelerator
        self.buffer: list[torch.Tensor] | None = None
        self.held: list[torch.Tensor] | None = None   # gradient of the value loss on the policy's parameters

    def _grads(self, loss: torch.Tensor) -> list[torch.Tensor]:
        grads = torch.autograd.grad(loss, self.params, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]

    def accumulate(self, ratio: torch.Tensor, advantages: torch.Tensor, clipped: torch.Tensor,
                   weights: torch.Tensor, normaliser: float, unscaled_loss: torch.Tensor | None = None) -> None:
        """Add a micro-batch's C: the gradient of its `clip_bias_loss` under the minibatch's loss normaliser.
        `unscaled_loss` (a value loss through the policy's own trunk) is part of the backward but not of the
        policy gradient: its gradient on the policy's parameters is held, so the scale leaves it as it is."""
        grads = self._grads(clip_bias_loss(ratio, advantages, clipped, weights) / normaliser)
        self.buffer = grads if self.buffer is None else [b + g for b, g in zip(self.buffer, grads)]
        if unscaled_loss is not None:
            held = self._grads(unscaled_loss)
            self.held = held if self.held is None else [h + g for h, g in zip(self.held, held)]

    def scale_gradients(self) -> float:
        """Scale the accumulated policy gradient; returns ‖C‖ (0 when nothing was accumulated)."""
        if self.buffer is None and self.accelerator.num_processes == 1:
            return 0.0
        buffer = self.buffer or [torch.zeros_like(p) for p in self.params]   # no signal here: 0, but stay in step
        flat = torch.cat([b.flatten() for b in buffer])
        if self.accelerator.num_processes > 1:
            flat = self.accelerator.reduce(flat, reduction="sum")
        norm = float(flat.norm())
        scale = clip_bias_scale(norm, self.tau)
        held = self.held   # local, like the gradients it is part of (they are averaged after this)
        if scale != 1.0:
            for i, p in enumerate(self.params):
                if p.grad is not None:
                    p.grad.mul_(scale)
                    if held is not None:   # the value loss's share, unscaled: g = s (g - h) + h
                        p.grad.add_(held[i], alpha=1.0 - scale)
        self.buffer = self.held = None
        return norm


class NoClipBias:
    """clip_bias_norm off: nothing to accumulate, the gradient as it is."""

    def accumulate(self, ratio, advantages, clipped, weights, normaliser, unscaled_loss=None) -> None:
        pass

    def scale_gradients(self) -> float | None:
        return None


class Trainer:
    """Holds what the loop needs between iterations; `train()` below is the loop."""

    def __init__(self, config: TrainConfig, *, progress: bool = True):
        self.config = config
        # No buffer broadcast in DDP's forward: the buffers (rotary frequencies) are the same everywhere, and a
        # broadcast would be a collective in every forward, while processes run different numbers of micro-batches.
        tracker, self.tracker_env = {}, {}
        if config.report_to != "none":   # offline by default; the files go to the run folder
            trackers_dir = (Path(config.output_dir) / "trackers").resolve()
            # Each package's switches, for this run only (train() removes them at the end) and only where the user has
            # not set them. trackio reads TRACKIO_DIR once, at import: a second trackio run in a process logs beside the
            # first. MLflow 3 refuses a file store; a SQLite file is its local backend.
            defaults = {"wandb": {"WANDB_MODE": "offline", "WANDB_DIR": str(trackers_dir)},
                        "trackio": {"TRACKIO_DIR": str(trackers_dir / "trackio")},
                        "mlflow": {"MLFLOW_TRACKING_URI": f"sqlite:///{trackers_dir / 'mlflow.db'}",
                                   "MLFLOW_DISABLE_TELEMETRY": "true"}}.get(config.report_to, {})
            self.tracker_env = {k: v for k, v in defaults.items() if k not in os.environ}
            os.environ.update(self.tracker_env)
            tracker = {"log_with": config.report_to, "project_dir": str(trackers_dir)}
        refuse_sharding()   # before any accelerator or model: Megatron-LM would silently train something else
        kind = "fsdp" if sharding.requested() else "deepspeed" if sharding.deepspeed_requested() else "none"
        if kind != "none":
            name = {"fsdp": "FSDP", "deepspeed": "DeepSpeed"}[kind]
            try:
                settings = sharding.launch_settings() if kind == "fsdp" else sharding.deepspeed_settings()
            except ValueError as err:
                raise RunError(str(err)) from None
            if config.clip_bias_norm:
                raise RunError(f"clip_bias_norm is not supported under {name}: its extra gradient (autograd.grad) "
                               f"would need the gathered parameters, which {name} keeps to itself; set "
                               "clip_bias_norm: false, or train without sharding (configs/accelerate/ddp.yaml)")
        # turnrl shards itself (turnrl/algorithms/sharding.py): accelerate's FSDP and DeepSpeed plugins are kept out,
        # and without a GPU the processes join over gloo (accelerate would otherwise start each as a run of its own)
        if kind != "none" and not torch.cuda.is_available():
            os.environ.setdefault("ACCELERATE_USE_CPU", "true")
        with _without_env(sharding.FSDP_SWITCH, sharding.DEEPSPEED_SWITCH):
            self.accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
                                           **tracker)
        launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if launched != self.accelerator.num_processes:
            raise RunError(f"{launched} processes were launched (WORLD_SIZE) but accelerate joined "
                           f"{self.accelerator.num_processes}: each would train a run of its own into the same folder. "
                           "On a CPU set ACCELERATE_USE_CPU=true (or use_cpu: true in the accelerate config)")
        if kind == "fsdp":
            self.sharding = sharding.FSDPSharding(self.accelerator.device, **settings)
        elif kind == "deepspeed":
            try:
                self.sharding = sharding.DeepSpeedSharding(self.accelerator.device, **settings)
            except ValueError as err:
                raise RunError(str(err)) from None
        else:
            self.sharding = sharding.NoSharding()
        self.progress = progress and self.accelerator.is_main_process
        torch.manual_seed(config.seed)
        if config.env_module:
            load_env_module(config.env_module)
        # Fail on a bad environment or split before loading any model.
        probe = make_env(config.env, **config.env_kwargs)
        self.train_tasks = list(probe.tasks(config.split))
        if config.eval_episodes:
            for split in config.eval_splits:
                probe.tasks(split)
        if config.warm_start_episodes:
            probe.reset(task=self.train_tasks[0], seed=config.seed)
            if probe.expert_action() is None:
                raise ValueError(f"warm_start_episodes needs an expert, and environment {config.env!r} has none "
                                 "(expert_action() returns None); set warm_start_episodes: 0")
        probe.close()
        self.search_episodes = load_search_episodes(config) if config.search_episodes else []
        world = self.accelerator.num_processes
        self.local_tasks = len(range(self.accelerator.process_index, config.tasks_per_iteration, world))
        self.envs = [make_env(config.env, **config.env_kwargs)
                     for _ in range(self.local_tasks * config.group_size)]

        model, self.tokenizer = load_model(config.model, dtype=config.dtype, lora=config.lora,
                                           lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                                           progress=self.progress)
        self.reference = None
        if config.kl_coef > 0 and not config.lora:
            self.reference = copy.deepcopy(model).requires_grad_(False)
        if self.sharding.sharded:   # FSDP2 units on the device, before the optimizer sees the (sharded) parameters
            model = self.sharding.shard(model.to(self.accelerator.device))
            if self.reference is not None:
                self.reference = self.sharding.shard(self.reference.to(self.accelerator.device))
            if self.progress and kind == "fsdp":
                print(f"FSDP: {len(self.sharding.units)} units sharded over {self.accelerator.num_processes} "
                      "processes", flush=True)
            if self.progress and kind == "deepspeed":
                print(f"DeepSpeed: ZeRO-{self.sharding.stage} over {self.accelerator.num_processes} processes (the "
                      "engine is built at the first update)", flush=True)
        params = [p for p in model.parameters() if p.requires_grad]
        # advantage gae: a turn-level critic (value head on the policy's trunk, or a separate value model)
        self.critic = Critic(config.critic, model) if config.advantage == "gae" else None
        # perturbation alp: noise hooks on every (selected) decoder layer, active only in the update's forward
        self.noise = LayerwiseNoise(model, sigma=config.alp_sigma, learnable=config.alp_learnable,
                                    layers=config.alp_layers, seed=config.seed) \
            if config.perturbation == "alp" else NO_NOISE
        groups = [{"params": params}]
        if list(self.noise.parameters()):
            groups.append({"params": list(self.noise.parameters()), "lr": config.alp_sigma_learning_rate,
                           "weight_decay": 0.0})
        if self.critic is not None:
            self.critic.to(self.accelerator.device)
            groups.append({"params": list(self.critic.parameters()), "lr": config.critic_learning_rate})
        if kind == "deepspeed":   # the policy's optimizer is the engine's (built at the first update); the rest here
            groups = groups[1:]
        optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay) \
            if groups else None
        if self.sharding.sharded:   # no DDP wrapper: FSDP reduces the policy's gradients in each backward
            self.model, self.optimizer = model, optimizer
        else:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.reference is not None:
            self.reference.to(self.accelerator.device)
        self.policy = Policy(self.accelerator.unwrap_model(self.model), self.tokenizer,
                             temperature=config.temperature, top_p=config.top_p,
                             max_new_tokens=config.max_new_tokens, device=self.accelerator.device)
        self.prompts = PromptBuilder(show_admissible=config.show_admissible_actions, style=config.prompt_style)
        self.run_dir = Path(config.output_dir)
        self.phases = PhaseProgress(enabled=self.progress)
        self.skip_zero_signal = True   # tests turn it off to check that skipping changes nothing
        self.failures: dict[str, int] = {}   # failed episodes by cause (reset, step, malformed, timeout), this iteration
        self.nonfinite_in_a_row = 0    # optimizer steps skipped in a row for a NaN or infinite loss or gradient
        self.replay = ReplayBuffer(config.max_staleness)   # rollouts of earlier iterations trained on again
        self.log_ratio = alp_log_ratio(config.ratio_level) if config.perturbation == "alp" else \
            RATIO_LEVELS[config.ratio_level]   # token, turn (ST-PPO) or sequence (GSPO) ratios
        self.clip_bias = (ClipBiasNormaliser([p for p in self.model.parameters() if p.requires_grad],
                                             config.clip_bias_tau, self.accelerator)
                          if config.clip_bias_norm else NoClipBias())

    # -- one iteration's pieces -------------------------------------------------------------------

    def iteration_tasks(self, iteration: int, draw: int = 0) -> list:
        """This process's tasks for an iteration (and a further draw of dynamic sampling): a seeded draw,
        so a resumed run draws the same."""
        rng = random.Random(f"{self.config.seed}-{iteration}" + (f"-{draw}" if draw else ""))
        count = self.config.tasks_per_iteration
        drawn = rng.sample(self.train_tasks, count) if count <= len(self.train_tasks) else \
            [rng.choice(self.train_tasks) for _ in range(count)]
        return drawn[self.accelerator.process_index:: self.accelerator.num_processes]

    def generators(self, iteration: int, draw: int, groups: int) -> list[torch.Generator]:
        """One sampling generator per episode of this process's `groups` task groups, seeded by (seed, iteration,
        draw, the group's index over all processes, the member): an episode samples the same tokens whichever
        process plays it and whatever shares its batch, so N processes roll out what one process would."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        out = []
        for g in range(groups):
            for member in range(self.config.group_size):
                out.append(keyed_generator(f"{self.config.seed}-{iteration}-{draw}-{rank + world * g}-{member}",
                                           self.accelerator.device))
        return out

    def play(self, tasks: list, iteration: int, draw: int = 0) -> list[Episode]:
        """One group of `group_size` rollouts per task (the tasks of `iteration_tasks(iteration, draw)`)."""
        cfg = self.config
        self.model.eval()
        specs = group_specs(tasks, cfg.group_size, seed=cfg.seed)
        generator = self.generators(iteration, draw, len(tasks))
        start = time.perf_counter()
        with self.phases.phase("rollout", total=cfg.max_turns) as show, self.sharding.full_weights():
            def turn_done(state: dict) -> None:
                show(completed=state["turn"], live=state["live"],
                     tok_s=state["tokens"] / max(time.perf_counter() - start, 1e-9))

            episodes = rollout(self.policy, self.envs[: len(specs)], specs, env_name=cfg.env, context=cfg.context,
                               max_turns=cfg.max_turns, invalid_penalty=cfg.invalid_penalty,
                               prompt_builder=self.prompts, generator=generator,
                               cross_turn_cache=bool(cfg.cross_turn_cache), progress=turn_done,
                               step_timeout=cfg.env_step_timeout)
        for i, episode in enumerate(episodes):
            if episode.failed:   # a fresh environment next time
                self.failures[episode.failure_cause] = self.failures.get(episode.failure_cause, 0) + 1
                if self.progress:
                    print(f"episode failed (task {episode.task!r}): {episode.error}", flush=True)
                self.envs[i] = replace_env(self.envs[i], cfg.env, cfg.env_kwargs)
        return episodes

    def without_failed(self, episodes: list[Episode]) -> list[Episode]:
        """Drop failed episodes, and with a group advantage their whole group (its baseline needs every member)."""
        if self.config.advantage == "gae":
            return [e for e in episodes if not e.failed]
        broken = {e.group_id for e in episodes if e.failed}
        return [e for e in episodes if e.group_id not in broken]

    def collect(self, iteration: int) -> tuple[list[Episode], dict[str, int]]:
        """This iteration's episodes and group counts. With `filter_groups` (DAPO's dynamic sampling), groups
        whose returns are all equal carry no signal and are dropped, and further task groups are drawn
        until every process holds its share of informative groups or `filter_groups_max_draws` is reached."""
        cfg = self.config
        self.failures = {}
        if not cfg.filter_groups:
            played = self.play(self.iteration_tasks(iteration), iteration)
            episodes = self.label(self.without_failed(played), iteration)
            kept = len({e.group_id for e in episodes})
            return episodes, {"groups_drawn": self.local_tasks, "groups_kept": kept,
                              "groups_dropped": self.local_tasks - kept, "drawn_episodes": len(played),
                              "drawn_successes": sum(e.success for e in played)}
        kept: list[list[Episode]] = []
        drawn = dropped = drawn_episodes = drawn_successes = 0
        for draw in range(cfg.filter_groups_max_draws):
            episodes = self.play(self.iteration_tasks(iteration, draw), iteration, draw)
            drawn_episodes += len(episodes)
            drawn_successes += sum(e.success for e in episodes)
            usable = self.without_failed(episodes)
            failed_groups = len({e.group_id for e in episodes}) - len({e.group_id for e in usable})
            drawn, dropped = drawn + failed_groups, dropped + failed_groups
            for group in _groups(usable):
                drawn += 1
                if len({e.total_reward - e.total_penalty for e in group}) > 1:
                    kept.append(group)
                else:
                    dropped += 1
            if self.all_processes(len(kept) >= self.local_tasks):
                break
        kept = kept[: self.local_tasks]
        for number, group in enumerate(kept):   # renumbered: groups of different draws never merge
            for episode in group:
                episode.group_id = number
        episodes = self.label([episode for group in kept for episode in group], iteration)
        return episodes, {"groups_drawn": drawn, "groups_kept": len(kept), "groups_dropped": dropped,
                          "drawn_episodes": drawn_episodes, "drawn_successes": drawn_successes}

    def search_batch(self, iteration: int) -> list[Episode]:
        """This iteration's share of the search episodes (`search_episodes_per_iteration`, dealt in order and
        cycled; each process takes every num_processes-th), as off-policy data of policy version -1."""
        if not self.search_episodes:
            return []
        n, count = len(self.search_episodes), self.config.search_episodes_per_iteration
        chosen = [self.search_episodes[((iteration - 1) * count + k) % n] for k in range(count)]
        chosen = chosen[self.accelerator.process_index:: self.accelerator.num_processes]
        return [copy.deepcopy(e) for e in chosen]

    def label(self, episodes: list[Episode], iteration: int) -> list[Episode]:
        """Give each episode its group identity (iteration, process, index within the process) and the policy
        version that generated it (the iterations of updates done before it)."""
        for episode in episodes:
            episode.group_id = (iteration, self.accelerator.process_index, episode.group_id)
            episode.policy_version = iteration - 1
        return episodes

    def all_processes(self, flag: bool) -> bool:
        """Whether `flag` holds on every process (the same answer everywhere, so processes stay in step)."""
        if self.accelerator.num_processes == 1:
            return flag
        value = torch.tensor([0.0 if flag else 1.0], device=self.accelerator.device)
        return float(self.accelerator.reduce(value, reduction="sum")) == 0.0

    def deepspeed_step(self, iteration: int, limit: float, minibatch_loss: float) -> float:
        """One optimizer step under DeepSpeed: the engine clips and steps the policy, the trainer's own optimizer the
        critic and σ. The engine's reduced gradients cannot be dropped, so a NaN or infinite loss or gradient stops
        the run at once (the last checkpoint intact) instead of skipping the step. Returns the policy's gradient norm."""
        critic_norm = float(torch.nn.utils.clip_grad_norm_(self.critic.parameters(), limit)) \
            if self.critic is not None else 0.0
        finite = math.isfinite(critic_norm) and math.isfinite(minibatch_loss)
        grad_norm = self.sharding.step() if self.all_processes(finite) else float("nan")
        if not math.isfinite(grad_norm):
            raise NonFiniteError(f"iteration {iteration}: a NaN or infinite loss or gradient under DeepSpeed, whose "
                                 "engine cannot drop a reduced gradient; the run stops here, its last checkpoint "
                                 "intact. Lower learning_rate, check rewards")
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad()
        return grad_norm

    @property
    def forward_model(self):
        """The model the update's forward runs through: DeepSpeed's engine where there is one."""
        return getattr(self.sharding, "engine", None) or self.policy.model

    def ensure_engine(self) -> None:
        """DeepSpeed: build the engine over the policy (once, at the first update or when a checkpoint is loaded)."""
        if self.sharding.kind == "deepspeed" and self.sharding.engine is None:
            cfg = self.config
            self.sharding.build([p for p in self.model.parameters() if p.requires_grad],
                                learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                max_grad_norm=cfg.max_grad_norm)

    def most_over_processes(self, count: int) -> int:
        """The largest `count` over the processes (the same answer everywhere)."""
        if self.accelerator.num_processes == 1:
            return count
        return int(self.accelerator.gather(torch.tensor([count], device=self.accelerator.device)).max())

    def stand_in(self, samples: list[Sample]) -> Sample:
        """A sample for a zero-weight micro-batch (FSDP's lock-step): one of this process's, or two pad tokens."""
        if samples:
            return samples[0]
        pad = self.policy.pad_id
        return Sample(token_ids=[pad, pad], loss_mask=[0, 0], turn_index=[-1, -1], behaviour_logprobs=[0.0, 0.0],
                      advantages=[0.0, 0.0], episode_index=-1, episode_agent_tokens=0,
                      old_values=[0.0, 0.0] if self.critic is not None else [],
                      value_targets=[0.0, 0.0] if self.critic is not None else [])

    def sync_gradients(self) -> None:
        """Average every trainable parameter's gradient (policy, critic) over processes in one all-reduce per
        optimizer step. Backward passes run without DDP's per-backward synchronisation, so processes may run
        different numbers of micro-batches (or none: a process without samples contributes zeros)."""
        if self.accelerator.num_processes == 1:
            return
        # under FSDP the policy's gradients are reduced in each backward already; the rest stays whole
        params = [] if self.sharding.sharded else [p for p in self.model.parameters() if p.requires_grad]
        params += list(self.noise.parameters())
        if self.critic is not None:
            params += list(self.critic.parameters())
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        flat = self.accelerator.reduce(flat, reduction="mean")
        offset = 0
        for p in params:
            p.grad = flat[offset: offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    @torch.no_grad()
    def turn_values(self, samples: list[Sample]) -> dict[tuple[int, int], float]:
        """The critic's value of each turn's state, {(episode index, turn): value}, read at the turn's first token."""
        values: dict[tuple[int, int], float] = {}
        size = self.config.micro_batch_size
        with self.sharding.full_weights():   # processes value different numbers of samples
            for i in range(0, len(samples), size):
                micro = samples[i: i + size]
                batch = make_batch(micro, [1.0] * len(micro), self.policy.pad_id, self.accelerator.device)
                hidden = None
                if self.critic.needs_policy_hidden:
                    _, hidden = token_logprobs(self.policy.model, batch.input_ids, batch.attention_mask,
                                               return_hidden=True)
                v = self.critic.values(batch.input_ids, batch.attention_mask,
                                       positions_from_mask(batch.attention_mask), hidden)
                starts = turn_starts(batch.turn_index)
                for row, col in starts.nonzero().tolist():
                    values[(micro[row].episode_index, int(batch.turn_index[row, col]))] = float(v[row, col])
        return values

    def training_samples(self, episodes: list[Episode]) -> tuple[list[Sample], list[list[float]]]:
        """The episodes' training samples and per-turn advantages. With advantage gae the critic values every
        turn first; GAE over turns gives the advantages, and each sample carries its turns' values and targets."""
        cfg = self.config
        if cfg.advantage != "gae":
            advantages = episode_turn_advantages(cfg, episodes)
            return [s for i, (e, adv) in enumerate(zip(episodes, advantages))
                    for s in episode_samples(e, adv, i)], advantages
        unscored = [s for i, e in enumerate(episodes) for s in episode_samples(e, [0.0] * len(e.turns), i)]
        values = self.turn_values(unscored)
        # a turn without tokens (nothing generated) has no state to read and nothing to train: value 0
        turn_values = [[values.get((i, t), 0.0) for t in range(len(e.turns))] for i, e in enumerate(episodes)]
        rewards = [[t.reward - t.penalty for t in e.turns] for e in episodes]
        advantages, targets = episode_gae(rewards, turn_values, gamma=cfg.gamma, lam=cfg.gae_lambda, norm=None)
        # whitened over every process's turns
        advantages = whiten(advantages, cfg.advantage_norm, _reduce(self.accelerator, advantage_moments(advantages)))
        samples = []
        for i, (e, adv) in enumerate(zip(episodes, advantages)):
            for sample in episode_samples(e, adv, i):
                sample.old_values = [turn_values[i][t] if t >= 0 else 0.0 for t in sample.turn_index]
                sample.value_targets = [targets[i][t] if t >= 0 else 0.0 for t in sample.turn_index]
                samples.append(sample)
        return samples, advantages

    @torch.no_grad()
    def reference_logprobs(self, batch: TrainBatch) -> torch.Tensor:
        temperature = self.policy.logprob_temperature
        if self.config.lora:
            with self.accelerator.unwrap_model(self.model).disable_adapter():
                return token_logprobs(self.policy.model, batch.input_ids, batch.attention_mask, temperature)
        return token_logprobs(self.reference, batch.input_ids, batch.attention_mask, temperature)

    def token_weight(self, sample: Sample) -> float:
        """Loss weight of each agent token of a sample: 1 (token mean) or 1 / the episode's agent tokens."""
        if self.config.loss_aggregation == "token":
            return 1.0
        return 1.0 / max(sample.episode_agent_tokens, 1)

    def sample_offset(self, local_samples: int) -> tuple[int, int]:
        """(the number of this process's first sample among all processes' samples, the total), processes in
        order of their index."""
        if self.accelerator.num_processes == 1:
            return 0, local_samples
        counts = self.accelerator.gather(torch.tensor([local_samples], device=self.accelerator.device)).tolist()
        return sum(counts[: self.accelerator.process_index]), sum(counts)

    def global_normaliser(self, local_weight: float) -> float:
        """The loss normaliser of a minibatch: its weight summed over all processes (a token mean divides by
        every process's tokens), divided by the number of processes because gradient synchronisation
        averages the processes' gradients. One process: the local weight."""
        world = self.accelerator.num_processes
        if world == 1:
            return local_weight
        total = self.accelerator.reduce(torch.tensor([float(local_weight)], device=self.accelerator.device),
                                        reduction="sum")
        return float(total) / world

    def has_signal(self, sample: Sample) -> bool:
        """Whether a sample's loss can be non-zero: an agent token with a non-zero advantage, or a KL term.
        Samples without signal cost no forward or backward; they still count in the loss normaliser, so the
        loss and its gradient are the same as if they had been computed. A minibatch without signal on any
        process takes no optimizer step (AdamW's momentum would otherwise move the weights on a zero gradient)."""
        if self.config.kl_coef > 0 or self.critic is not None:   # a KL or value loss on every agent token
            return bool(sum(sample.loss_mask))
        return any(a != 0.0 for a, m in zip(sample.advantages, sample.loss_mask) if m)

    def update(self, samples: list[Sample], iteration: int) -> dict:
        """Epochs of minibatch PPO updates; returns the update's statistics."""
        cfg, acc = self.config, self.accelerator
        self.ensure_engine()
        rng = random.Random(f"update-{cfg.seed}-{iteration}")
        stats = {"loss": 0.0, "clip_fraction": 0.0, "kl": 0.0, "ratio_mean": 0.0, "ratio_min": float("inf"),
                 "ratio_max": 0.0, "logprob_max_abs_diff": None}
        agent_tokens = computed_tokens = skipped = steps = 0
        clip_bias_norms: list[float] = []
        grad_norms: list[float] = []   # the policy's gradient norm before clipping, per optimizer step
        nonfinite = 0                  # optimizer steps skipped for a NaN or infinite loss or gradient
        value_stats = [0.0, 0.0, 0.0]   # with a critic: summed value loss, clipped values, turns
        ratios: list[torch.Tensor] = []   # the ratios the objective saw, for the tail statistics
        clip_by_staleness: dict[int, list] = {}   # staleness -> [clipped tokens, tokens]
        first_update = True
        # Minibatches are drawn over the samples of all processes (numbered process by process), each process
        # training on its own members: N processes take the same steps on the same global batch as one.
        offset, total = self.sample_offset(len(samples))
        n_minibatches = math.ceil(total / cfg.minibatch_size)
        signal = [self.has_signal(s) or not self.skip_zero_signal for s in samples]
        with self.phases.phase("update", total=cfg.epochs * n_minibatches) as show:
            for epoch in range(cfg.epochs):
                order = list(range(total))
                rng.shuffle(order)
                for k in range(n_minibatches):
                    show(completed=epoch * n_minibatches + k, skipped=skipped)
                    chosen = [i - offset for i in order[k::n_minibatches] if offset <= i < offset + len(samples)]
                    minibatch = [samples[i] for i in chosen]
                    active = [samples[i] for i in chosen if signal[i]]
                    skipped += len(minibatch) - len(active)
                    agent_tokens += sum(sum(s.loss_mask) for s in minibatch)
                    local_weight = sum(self.token_weight(s) * sum(s.loss_mask) for s in minibatch)
                    if self.all_processes(not active or not local_weight):
                        continue   # no process has anything to learn from here: no forward, no step
                    minibatch_weight = self.global_normaliser(local_weight)
                    value_weight = self.global_normaliser(sum(_turn_count(s) for s in minibatch)) \
                        if self.critic is not None else 1.0
                    if not active or not local_weight:   # others have: stay in step with them
                        active = []
                    minibatch_loss = 0.0   # summed over micro-batches: a NaN or infinity anywhere shows here
                    micro_batches = [active[i: i + cfg.micro_batch_size]
                                     for i in range(0, len(active), cfg.micro_batch_size)]
                    real = len(micro_batches)
                    if self.sharding.sharded:   # forward and backward are collectives: the same count everywhere
                        micro_batches += [[self.stand_in(samples)]] * (self.most_over_processes(real) - real)
                    for index, micro in enumerate(micro_batches):
                        dummy = index >= real   # a zero-weight stand-in: keeps the processes in step, adds nothing
                        batch = make_batch(micro, [0.0 if dummy else self.token_weight(s) for s in micro],
                                           self.policy.pad_id, acc.device)
                        if dummy:
                            batch.loss_mask = batch.loss_mask * 0.0
                        mask = batch.loss_mask
                        shared_trunk = self.critic is not None and self.critic.needs_policy_hidden
                        # the unwrapped model: gradients are averaged over processes once per step (sync_gradients),
                        # not by DDP's hooks, so processes may run different numbers of micro-batches
                        with self.noise.active(step=iteration * 1_000_003 + epoch * 1_009 + k, micro_batch=index):
                            new, hidden = token_logprobs(self.forward_model, batch.input_ids, batch.attention_mask,
                                                         self.policy.logprob_temperature, return_hidden=True) \
                                if shared_trunk else (token_logprobs(self.forward_model, batch.input_ids,
                                                                     batch.attention_mask,
                                                                     self.policy.logprob_temperature), None)
                        ratio = torch.exp(self.log_ratio(new - batch.behaviour, batch.turn_index, mask))
                        loss_tokens, clipped = ppo_clip_loss(ratio, batch.advantages, cfg.clip_eps, cfg.clip_eps_high,
                                                             cfg.dual_clip)
                        loss = (loss_tokens * batch.weights).sum() / minibatch_weight
                        value_loss = None
                        if self.critic is not None:   # clipped value loss at the first token of each turn
                            starts = turn_starts(batch.turn_index).float()
                            if dummy:   # no value loss either
                                starts = starts * 0.0
                            values = self.critic.values(batch.input_ids, batch.attention_mask,
                                                        positions_from_mask(batch.attention_mask), hidden)
                            per_turn = clipped_value_loss(values, batch.old_values, batch.value_targets,
                                                          cfg.value_clip)
                            value_loss = cfg.vf_coef * (per_turn * starts).sum() / value_weight
                            with torch.no_grad():
                                value_stats[0] += float((per_turn * starts).sum())
                                value_stats[1] += float(((values - batch.old_values).abs() > cfg.value_clip).float()
                                                        .mul(starts).sum())
                                value_stats[2] += float(starts.sum())
                        self.clip_bias.accumulate(ratio, batch.advantages, clipped, batch.weights, minibatch_weight,
                                                  unscaled_loss=value_loss if shared_trunk else None)
                        if value_loss is not None:
                            loss = loss + value_loss
                        if cfg.alp_regulariser and index == 0 and real:   # once per optimizer step
                            loss = loss + self.noise.regulariser()
                        minibatch_loss += float(loss.detach())
                        if cfg.kl_coef > 0:
                            kl = kl_k3(new, self.reference_logprobs(batch))
                            loss = loss + cfg.kl_coef * (kl * batch.weights).sum() / minibatch_weight
                            stats["kl"] += float((kl.detach() * mask).sum())
                        if self.sharding.kind == "deepspeed":   # gradients reduced at the step's last micro-batch
                            self.sharding.backward(loss, last=index == len(micro_batches) - 1)
                        else:
                            acc.backward(loss)
                        with torch.no_grad():
                            on = mask.bool()
                            fresh = on & (batch.policy_version == iteration - 1)[:, None]
                            # nothing updated yet: fresh samples must agree (under FSDP the unperturbed forward
                            # runs on every process, a collective)
                            if first_update and (fresh.any() or self.sharding.sharded):
                                clean = new if self.noise is NO_NOISE else token_logprobs(   # unperturbed
                                    self.policy.model, batch.input_ids, batch.attention_mask,
                                    self.policy.logprob_temperature)
                                if fresh.any():
                                    diff = float((clean - batch.behaviour).abs()[fresh].max())
                                    stats["logprob_max_abs_diff"] = max(stats["logprob_max_abs_diff"] or 0.0, diff)
                            if cfg.max_staleness:   # clipped and all tokens by staleness (0 = fresh; not search)
                                staleness = (iteration - 1 - batch.policy_version)[:, None].expand_as(on)[on]
                                for age in [a for a in staleness.unique().tolist() if a <= cfg.max_staleness]:
                                    at = staleness == age
                                    by_age = clip_by_staleness.setdefault(int(age), [0.0, 0])
                                    by_age[0] += float(clipped[on][at].sum())
                                    by_age[1] += int(at.sum())
                            if not dummy:
                                stats["loss"] += float((loss_tokens * mask).sum())
                                stats["clip_fraction"] += float(clipped[on].sum())
                                stats["ratio_mean"] += float(ratio[on].sum())
                                stats["ratio_min"] = min(stats["ratio_min"], float(ratio[on].min()))
                                stats["ratio_max"] = max(stats["ratio_max"], float(ratio[on].max()))
                                ratios.append(ratio[on].detach().float().cpu())
                        computed_tokens += int(mask.sum())
                    c_norm = self.clip_bias.scale_gradients()
                    if c_norm is not None:
                        clip_bias_norms.append(c_norm)
                    self.sync_gradients()
                    # policy and critic clipped apart, as verl's actor and critic (max_grad_norm 0: measured only)
                    limit = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
                    if self.sharding.kind == "deepspeed":
                        grad_norms.append(self.deepspeed_step(iteration, limit, minibatch_loss))
                        first_update = False
                        steps += 1
                        continue
                    grad_norm = self.sharding.clip_grad_norm([p for p in self.model.parameters() if p.requires_grad],
                                                             limit) if self.sharding.sharded else \
                        float(acc.clip_grad_norm_(self.model.parameters(), limit))
                    critic_norm = float(torch.nn.utils.clip_grad_norm_(self.critic.parameters(), limit)) \
                        if self.critic is not None else 0.0
                    first_update = False
                    finite = math.isfinite(grad_norm) and math.isfinite(critic_norm) and math.isfinite(minibatch_loss)
                    if not self.all_processes(finite):
                        # a NaN or infinite loss or gradient: skip the step rather than poison every weight
                        self.optimizer.zero_grad()
                        nonfinite += 1
                        self.nonfinite_in_a_row += 1
                        if self.nonfinite_in_a_row >= cfg.max_nonfinite_steps:
                            raise NonFiniteError(
                                f"iteration {iteration}: {self.nonfinite_in_a_row} optimizer steps in a row had a NaN "
                                f"or infinite loss or gradient (max_nonfinite_steps {cfg.max_nonfinite_steps}); the "
                                "run stops here, its last checkpoint intact. Lower learning_rate, check rewards")
                        continue
                    self.nonfinite_in_a_row = 0
                    grad_norms.append(grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                    steps += 1
        local_tokens = computed_tokens   # this process's (the loop sums them over processes)
        if acc.num_processes > 1:   # the statistics of the whole update, over every process's tokens
            sums = _reduce(acc, {"loss": stats["loss"], "kl": stats["kl"], "clip_fraction": stats["clip_fraction"],
                                 "ratio_mean": stats["ratio_mean"], "agent_tokens": agent_tokens,
                                 "computed_tokens": computed_tokens, "value_loss": value_stats[0],
                                 "value_clipped": value_stats[1], "value_turns": value_stats[2],
                                 **{f"clip{age}": clip_by_staleness.get(age, [0.0, 0])[0] for age in
                                    range(cfg.max_staleness + 1)},
                                 **{f"tokens{age}": clip_by_staleness.get(age, [0.0, 0])[1] for age in
                                    range(cfg.max_staleness + 1)}})
            stats.update({k: sums[k] for k in ("loss", "kl", "clip_fraction", "ratio_mean")})
            agent_tokens, computed_tokens = sums["agent_tokens"], sums["computed_tokens"]
            value_stats = [sums["value_loss"], sums["value_clipped"], sums["value_turns"]]
            clip_by_staleness = {age: [sums[f"clip{age}"], sums[f"tokens{age}"]] for age in range(cfg.max_staleness + 1)
                                 if sums[f"tokens{age}"]}
            local = torch.cat(ratios) if ratios else torch.empty(0)
            extremes = acc.gather(torch.tensor([[-float(local.min()) if len(local) else -float("inf"),
                                                 float(local.max()) if len(local) else 0.0]], device=acc.device))
            stats["ratio_min"], stats["ratio_max"] = -float(extremes[:, 0].max()), float(extremes[:, 1].max())
            padded = acc.pad_across_processes(local.to(acc.device)[None], dim=1, pad_index=float("nan"))
            everything = acc.gather(padded).flatten().cpu()
            ratios = [everything[~torch.isnan(everything)]]
        # Skipped tokens have loss and KL exactly 0, so these means are over all agent tokens; the ratio
        # statistics describe the tokens that were computed.
        for key in ("loss", "kl"):
            stats[key] /= max(agent_tokens, 1)
        for key in ("clip_fraction", "ratio_mean"):
            stats[key] /= max(computed_tokens, 1)
        if stats["ratio_min"] == float("inf"):
            stats["ratio_min"] = 0.0
        stats.update(ratio_tail(torch.cat(ratios)) if ratios else dict.fromkeys(RATIO_TAIL_KEYS))
        if cfg.max_staleness:   # clip fraction of the tokens of each staleness (0 = fresh)
            stats.update({f"clip_fraction_staleness{age}": clipped / max(tokens, 1)
                          for age, (clipped, tokens) in sorted(clip_by_staleness.items())})
        stats.update(train_tokens=local_tokens, skipped_samples=skipped, optimizer_steps=steps, nonfinite_steps=nonfinite,
                     grad_norm=sum(grad_norms) / len(grad_norms) if grad_norms else None)
        if self.critic is not None:
            stats.update(value_loss=value_stats[0] / max(value_stats[2], 1),
                         value_clip_fraction=value_stats[1] / max(value_stats[2], 1))
        if self.noise is not NO_NOISE:   # ALP's σ per layer after the update
            sigmas = self.noise.sigmas()
            stats.update(alp_sigma_mean=sum(sigmas) / len(sigmas), alp_sigma_min=min(sigmas),
                         alp_sigma_max=max(sigmas), sigma_per_layer=[round(x, 8) for x in sigmas])
        if self.config.clip_bias_norm:   # ‖C(θ)‖ of each optimizer step: its mean and largest value
            stats.update(clip_bias_norm_mean=sum(clip_bias_norms) / max(len(clip_bias_norms), 1),
                         clip_bias_norm_max=max(clip_bias_norms, default=0.0))
        return stats

    def evaluate(self, phase: str, split: str | None = None) -> dict:
        """Greedy decoding on the first `eval_episodes` tasks of `split` (default `eval_split`): the `turnrl eval`
        summary. The trajectories go to `eval_{phase}.jsonl` in the run folder."""
        cfg = self.config
        split = split or cfg.eval_split
        greedy = Policy(self.policy.model, self.tokenizer, temperature=0.0, max_new_tokens=cfg.max_new_tokens,
                        device=self.accelerator.device)
        tasks = list(make_env(cfg.env, **cfg.env_kwargs).tasks(split))[: cfg.eval_episodes]
        self.model.eval()
        with self.phases.phase(f"eval {phase}", total=cfg.max_turns) as show, self.sharding.full_weights():
            episodes = evaluate(greedy, cfg.env, tasks, env_kwargs=cfg.env_kwargs, context=cfg.context,
                                max_turns=cfg.max_turns, seed=cfg.seed, prompt_builder=self.prompts,
                                cross_turn_cache=bool(cfg.cross_turn_cache),
                                progress=lambda state: show(completed=state["turn"], live=state["live"]))
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with (self.run_dir / f"eval_{phase}.jsonl").open("w") as fh:
                for episode in episodes:
                    fh.write(json.dumps(episode.to_json(), default=str) + "\n")
        return {"env": cfg.env, "split": split, "model": cfg.model, "policy": "model", **summarize(episodes)}

    def warm_start(self) -> str:
        """Behaviour cloning from the environment's expert (the path of `turnrl sft`), cached under
        `default_cache_dir()/warm_start/KEY`: KEY hashes the model, environment, prompt and warm-start
        settings, seed and the demonstrations' tokens, so a second run with the same ones loads the result.
        Returns "trained" or "cached"."""
        cfg = self.config
        demos = expert_demonstrations(self.tokenizer, cfg.env,
                                      demonstration_tasks(cfg.env, cfg.env_kwargs, cfg.split, cfg.warm_start_episodes),
                                      env_kwargs=cfg.env_kwargs, context=cfg.context, max_turns=cfg.max_turns,
                                      seed=cfg.seed, prompt_builder=self.prompts)
        dataset = demonstration_dataset(demos)
        folder = default_cache_dir() / "warm_start" / warm_start_key(cfg, list(dataset["input_ids"]))
        model = self.accelerator.unwrap_model(self.model)
        if (folder / "turnrl_model.json").exists():
            self.load_policy(folder)
            return "cached"
        cloned = model
        if self.sharding.kind == "deepspeed" and self.sharding.engine is not None:
            raise RuntimeError("the warm start must run before the DeepSpeed engine is built")
        if self.sharding.kind == "fsdp":   # behaviour cloning (TRL's SFTTrainer) on a whole copy, loaded back into the shards
            cloned = load_model(cfg.model, dtype=cfg.dtype, lora=cfg.lora, lora_rank=cfg.lora_rank,
                                lora_alpha=cfg.lora_alpha, progress=False)[0]
            cloned.load_state_dict(self.sharding.full_state_dict(model), strict=False)   # tied weights given once
            cloned.to(self.accelerator.device)
        torch.manual_seed(cfg.seed)
        # TRL's trainer on the whole model, as without sharding (it would read the launch's FSDP or DeepSpeed switches)
        with _without_env(sharding.FSDP_SWITCH, sharding.DEEPSPEED_SWITCH, "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
            behaviour_clone(cloned, self.tokenizer, dataset, output_dir=self.run_dir / "warm_start",
                            epochs=cfg.warm_start_epochs, learning_rate=cfg.warm_start_learning_rate,
                            batch_size=cfg.warm_start_batch_size, seed=cfg.seed, progress=self.progress)
        shutil.rmtree(self.run_dir / "warm_start", ignore_errors=True)
        if self.sharding.kind == "fsdp":
            self.sharding.load_full_state_dict(model, cloned.state_dict())
        if self.accelerator.is_main_process:
            tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
            save_model(cloned, self.tokenizer, tmp, cfg.model)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        self.accelerator.wait_for_everyone()
        return "trained"

    # -- run folder -----------------------------------------------------------------------------

    def save_policy(self, path: Path) -> None:
        """Write the policy (model or adapter) to `path` from the main process; under FSDP every process must call
        it (the whole weights are gathered)."""
        model = self.accelerator.unwrap_model(self.model)
        state = self.sharding.full_state_dict(model) if self.sharding.sharded else None
        if self.accelerator.is_main_process:
            save_model(model, self.tokenizer, path, self.config.model, state_dict=state)

    def load_policy(self, folder: Path) -> None:
        """Load weights written by `save_policy` (or `save_model`) into the policy, sharded or not."""
        model = self.accelerator.unwrap_model(self.model)
        if self.sharding.kind == "fsdp":
            self.sharding.load_full_state_dict(model, _read_weights(folder))
        elif self.sharding.kind == "deepspeed" and self.sharding.engine is not None:
            raise RuntimeError("weights go into a DeepSpeed engine through its checkpoint (load_checkpoint)")
        else:
            _load_weights(model, folder)

    def save_checkpoint(self, iteration: int) -> None:
        acc, sharded = self.accelerator, self.sharding.sharded
        acc.wait_for_everyone()
        folder = self.run_dir / "checkpoints" / f"iter-{iteration:06d}"
        tmp = folder.with_name(folder.name + ".tmp")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        self.save_policy(tmp / "model")
        kind = self.sharding.kind
        if kind != "none":   # each process writes its shard of the optimizer state
            acc.wait_for_everyone()
            if kind == "fsdp":
                torch.save(self.sharding.optimizer_state(self.optimizer),
                           tmp / f"optimizer-rank{acc.process_index}.pt")
            else:   # DeepSpeed's own files (partitioned optimizer state and its copy of the weights)
                self.ensure_engine()
                self.sharding.save(tmp / "deepspeed")
            acc.wait_for_everyone()
        if not acc.is_main_process:
            return
        torch.save({"iteration": iteration, "sharding": kind, "optimizer_shards": acc.num_processes if sharded else 0,
                    "optimizer": None if kind == "fsdp" or self.optimizer is None else self.optimizer.state_dict(),
                    "critic": None if self.critic is None else self.critic.state_dict(),
                    "noise": None if self.noise is NO_NOISE else self.noise.state_dict(),
                    "replay": self.replay.episodes, "rng": _rng_states()}, tmp / "trainer_state.pt")
        write_manifest(tmp)   # sizes and hashes, fsync'd: a partial or corrupt checkpoint is recognised on load
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        _fsync_dir(folder.parent)
        for old in sorted((self.run_dir / "checkpoints").glob("iter-*"))[:-2]:   # keep the last two
            if not old.name.endswith(".tmp"):
                shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self) -> int:
        """Restore the latest intact checkpoint (one whose manifest matches its files; a partial or corrupt one is
        skipped with a message); returns the number of iterations already done (0 if none)."""
        checkpoints = sorted(p for p in (self.run_dir / "checkpoints").glob("iter-*") if not p.name.endswith(".tmp"))
        latest = None
        for candidate in reversed(checkpoints):
            problem = verify_manifest(candidate)
            if problem is None:
                latest = candidate
                break
            print(f"skipping checkpoint {candidate.name}: {problem}", flush=True)
        if latest is None:
            return 0
        state = torch.load(latest / "trainer_state.pt", map_location="cpu", weights_only=False)
        shards, world = state.get("optimizer_shards", 0), self.accelerator.num_processes
        written_kind = state.get("sharding", "fsdp" if shards else "none")
        kind = self.sharding.kind
        if written_kind != kind or (shards and shards != world):
            names = {"none": "without sharding", "fsdp": "under FSDP", "deepspeed": "under DeepSpeed"}
            written = names[written_kind] + (f" by {shards} processes" if shards else "")
            now = names[kind] + (f" by {world} processes" if kind != "none" else "")
            raise RunError(f"checkpoint {latest} was written {written} and this run is {now}: its optimizer state "
                           "cannot be dealt out differently; resume with the launch that wrote it")
        if kind == "deepspeed":   # the engine restores the weights and its partitioned optimizer state
            self.ensure_engine()
            self.sharding.load(latest / "deepspeed")
        else:
            self.load_policy(latest / "model")
        if kind == "fsdp":
            self.sharding.load_optimizer_state(self.optimizer, torch.load(
                latest / f"optimizer-rank{self.accelerator.process_index}.pt", map_location="cpu",
                weights_only=False))
        elif state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.critic is not None:
            if state.get("critic") is None:
                raise RuntimeError(f"checkpoint {latest} holds no critic, but this config trains one (advantage gae)")
            self.critic.load_state_dict(state["critic"])
        if self.noise is not NO_NOISE:
            if state.get("noise") is None:
                raise RuntimeError(f"checkpoint {latest} holds no ALP sigma, but this config perturbs (alp)")
            self.noise.load_state_dict(state["noise"])
        self.replay.episodes = list(state.get("replay") or [])
        if state.get("rng"):
            _set_rng_states(state["rng"])
        return int(state["iteration"])


def write_manifest(folder: Path) -> None:
    """manifest.json in `folder`: size and SHA-256 of every file, every file fsync'd first."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
        files[str(path.relative_to(folder))] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    with (folder / "manifest.json").open("w") as fh:
        json.dump(files, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def verify_manifest(folder: Path) -> str | None:
    """None when every file of the manifest is there with its size and hash, else what is wrong."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return "no manifest.json (written by an older turnrl, or the write was interrupted)"
    try:
        files = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return "manifest.json is not valid JSON"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != expected["size"]:
            return f"{name} is missing or has the wrong size"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its hash"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rng_states() -> dict:
    import numpy as np

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    import numpy as np

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


FAILURE_CAUSES = ("reset", "step", "malformed", "timeout")   # why an environment failed an episode


SHARDING_SWITCHES = {"ACCELERATE_USE_MEGATRON_LM": "Megatron-LM"}   # what `accelerate launch` sets for this config


def refuse_sharding() -> None:
    """Refuse a Megatron-LM launch (tensor and pipeline parallelism, which the trainer's rollouts and updates do not
    split). FSDP and DeepSpeed ZeRO are handled by `sharding.py`."""
    for switch, name in SHARDING_SWITCHES.items():
        if os.environ.get(switch, "").strip().lower() in sharding.TRUE:
            raise RunError(f"{name} is not supported by turnrl's trainer ({switch} is set by the accelerate config). "
                           "Launch with a data-parallel config (configs/accelerate/ddp.yaml) or shard with FSDP or "
                           "DeepSpeed ZeRO (configs/accelerate/fsdp.yaml, deepspeed_zero2.yaml, deepspeed_zero3.yaml); "
                           "docs/guides/scale-to-several-gpus.md compares them")


class _without_env:
    """Hide environment variables for the length of a block (restored after it)."""

    def __init__(self, *names: str):
        self.names, self.values = names, {}

    def __enter__(self):
        self.values = {name: os.environ.pop(name) for name in self.names if name in os.environ}

    def __exit__(self, *exc):
        os.environ.update(self.values)


class RunError(RuntimeError):
    """A run that cannot start or go on, with what to do about it (the CLI prints the message, no traceback)."""


class EnvironmentFailureError(RunError):
    """Too many episodes of an iteration failed in the environment (max_failed_fraction)."""


class NonFiniteError(RunError):
    """The loss or gradient stayed NaN or infinite for max_nonfinite_steps optimizer steps in a row."""


SEARCH_POLICY_VERSION = -1   # search episodes come from outside the run's policy versions


def load_search_episodes(config: TrainConfig) -> list[Episode]:
    """The episodes of `config.search_episodes` (the `turnrl search` / `turnrl eval` trajectory format), checked
    against the run: the same context mode, and behaviour log-probs for every generated token."""
    path = Path(config.search_episodes)
    if not path.is_file():
        raise FileNotFoundError(f"search_episodes: {path} is not a file (an episodes.jsonl from `turnrl search`)")
    episodes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        episode = Episode.from_json(json.loads(line))
        if episode.context != config.context:
            raise ValueError(f"search_episodes: {path} line {number} was recorded with context {episode.context}, "
                             f"but this run uses {config.context}; search with the run's context")
        if (episode.token_ids is None) if config.context == "full" else \
                any(t.prompt_ids is None for t in episode.turns):
            raise ValueError(f"search_episodes: {path} line {number} has no token ids for context {config.context}")
        if any(len(t.logprobs) != len(t.completion_ids) or not t.completion_ids for t in episode.turns):
            raise ValueError(f"search_episodes: {path} line {number} lacks behaviour log-probs or tokens for a turn "
                             "(episodes of a model, not of the expert, are needed)")
        episode.group_id = ("search", number)
        episode.policy_version = SEARCH_POLICY_VERSION
        episodes.append(episode)
    if not episodes:
        raise ValueError(f"search_episodes: {path} holds no episodes")
    return episodes


def warm_start_key(config: TrainConfig, demonstration_ids: list[list[int]]) -> str:
    """What a warm start depends on: model, environment, prompt format, warm-start settings, seed, and
    the demonstrations themselves (so a change of prompts or expert is a new key)."""
    settings = {name: getattr(config, name) for name in (
        "model", "dtype", "lora", "lora_rank", "lora_alpha", "env", "env_kwargs", "split", "context", "max_turns",
        "show_admissible_actions", "prompt_style", "warm_start_episodes", "warm_start_epochs", "warm_start_learning_rate",
        "warm_start_batch_size", "seed")}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(json.dumps(demonstration_ids).encode())
    return digest.hexdigest()[:20]


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a folder written by `save_model`: the adapter's (keys without the adapter's name) or the
    whole model's."""
    from safetensors.torch import load_file

    if (folder / "adapter_config.json").exists():
        return load_file(str(folder / "adapter_model.safetensors"))
    weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    return weights


def _load_weights(model, folder: Path) -> None:
    """Load saved weights (full model or LoRA adapter) into an already-built model in place."""
    weights = _read_weights(folder)
    if (folder / "adapter_config.json").exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, weights)
    else:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        # Tied embeddings are saved once; anything else missing means the checkpoint does not fit.
        missing = [k for k in missing if "lm_head" not in k]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {folder} does not match the model: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")


def write_curves(metrics_file: Path, out_file: Path, evals: dict | None = None) -> None:
    """Plot the main training curves from metrics.jsonl, and the held-out success of each evaluation
    phase (zero-shot, warm start, after RL) where there is one, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()] \
        if metrics_file.exists() else []
    if not rows and not evals:
        return
    keys = ["success_rate", "mean_return", "mean_turns", "invalid_action_rate", "clip_fraction",
            "logprob_max_abs_diff", "zero_advantage_fraction"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 6))
    x = [row["iteration"] for row in rows]
    for ax, key in zip(axes.flat, keys):
        values = [row.get(key) for row in rows]
        ax.plot(x, [float("nan") if v is None else v for v in values], marker="o", label=key)
        if key == "success_rate" and any(row.get("groups_dropped") for row in rows):   # dynamic sampling
            ax.plot(x, [row.get("drawn_success_rate", float("nan")) for row in rows], marker="x",
                    label="drawn_success_rate")
            ax.legend(fontsize="small")
        ax.set_title(key)
        ax.set_xlabel("iteration")
    ax = axes.flat[-1]
    phases = [p for p in EVAL_PHASES if p in (evals or {})]
    if phases:
        heights = [evals[p]["success_rate"] for p in phases]
        ax.bar(phases, heights, color=["#999999", "#4c72b0", "#dd8452"][: len(phases)])
        for i, h in enumerate(heights):
            ax.text(i, h, f"{h:.2f}", ha="center", va="bottom")
        ax.set_ylim(0, 1)
        ax.set_title(f"held-out success ({evals[phases[0]]['episodes']} tasks)")
    else:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)


def _reduce(accelerator: Accelerator, values: dict[str, float]) -> dict[str, float]:
    """Sum per-process values across processes."""
    if accelerator.num_processes == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], device=accelerator.device)
    total = accelerator.reduce(tensor, reduction="sum")
    return dict(zip(keys, total.tolist()))


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a training run; returns the run folder."""
    metrics_file = Path(config.output_dir) / "metrics.jsonl"
    if not resume and metrics_file.exists():   # checked before any model is loaded
        raise FileExistsError(f"{config.output_dir} already holds a run; pass --resume to continue it or choose "
                              "another output_dir")
    if resume:
        check_resumable(config)
    try:
        check_writable(config.output_dir)
    except OSError as err:
        raise RunError(str(err)) from None
    trainer = Trainer(config, progress=progress)
    acc, run_dir = trainer.accelerator, trainer.run_dir
    start = trainer.load_checkpoint() if resume else 0
    if resume and trainer.progress:
        print(f"resuming {run_dir} after iteration {start}" if start else
              f"resuming {run_dir}: no run there yet, starting at iteration 1", flush=True)
    eval_file = run_dir / "eval.json"
    evals = json.loads(eval_file.read_text()) if start and eval_file.exists() else {}
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        if metrics_file.exists():   # drop lines logged after the checkpoint we resume from
            kept = [line for line in metrics_file.read_text().splitlines()
                    if line.strip() and json.loads(line)["iteration"] <= start]
            metrics_file.write_text("".join(line + "\n" for line in kept))

    def log(message: str) -> None:
        if trainer.progress:
            print(message, flush=True)

    def record(phase: str) -> None:
        for split in config.eval_splits:
            key = phase if split == config.eval_split else f"{phase}@{split}"
            e = evals[key] = trainer.evaluate(key, split)
            log(f"eval {key}: success {e['success_rate']:.2f}  score {e['mean_score']:.2f}  "
                f"invalid {e['invalid_action_rate']:.2f}  ({e['episodes']} {e['split']} tasks)")
            if acc.is_main_process:
                write_text_atomic(eval_file, json.dumps(evals, indent=2, allow_nan=False))

    if config.report_to != "none":   # the scalar settings as the run's hyperparameters
        acc.init_trackers("turnrl", config={k: v for k, v in config.to_dict().items()
                                            if isinstance(v, (int, float, str, bool))})

    if start == 0:   # a resumed run has done these already (its checkpoint holds the warm-started weights)
        if config.eval_episodes and "zero_shot" in config.eval_phases:
            record("zero_shot")
        if config.warm_start_episodes:
            t0 = time.perf_counter()
            how = trainer.warm_start()
            log(f"warm start: {how} ({config.warm_start_episodes} expert episodes, {time.perf_counter() - t0:.0f}s)")
            if config.eval_episodes and "warm_start" in config.eval_phases:
                record("warm_start")

    for iteration in range(start + 1, config.iterations + 1):
        t0 = time.perf_counter()
        episodes, group_counts = trainer.collect(iteration)
        rollout_seconds = time.perf_counter() - t0
        failures = _reduce(acc, {f"failed_{cause}": float(trainer.failures.get(cause, 0)) for cause in FAILURE_CAUSES}
                           | {"drawn": float(group_counts["drawn_episodes"])})
        failed = sum(failures[f"failed_{cause}"] for cause in FAILURE_CAUSES)
        if failed > config.max_failed_fraction * failures["drawn"]:
            causes = ", ".join(f"{cause} {failures['failed_' + cause]:.0f}" for cause in FAILURE_CAUSES)
            raise EnvironmentFailureError(
                f"iteration {iteration}: {failed:.0f} of {failures['drawn']:.0f} episodes failed in the environment "
                f"({causes}), more than "
                f"max_failed_fraction {config.max_failed_fraction}; the run stops here, its last checkpoint intact "
                "(the messages above give each failure's last traceback line)")
        stale = trainer.replay.stale(iteration - 1)   # earlier iterations' episodes (max_staleness 0: none)
        stale += trainer.search_batch(iteration)      # search episodes (search_episodes), off-policy too
        trainer.replay.add(episodes)
        samples, advantages = trainer.training_samples(stale + episodes)   # gae: the critic's values first
        advantages = advantages[len(stale):]   # the fresh episodes' advantages, for the metrics below
        t1 = time.perf_counter()
        stats = trainer.update(samples, iteration)
        update_seconds = time.perf_counter() - t1

        turns = [t for e in episodes for t in e.turns]
        generated = sum(len(t.completion_ids) for t in turns)
        zero_groups = sum(1 for adv in advantages if all(a == 0.0 for a in adv))
        local = {
            "episodes": len(episodes), "successes": sum(e.success for e in episodes),
            "return_sum": sum(e.total_reward for e in episodes), "turns": len(turns),
            "invalid_turns": sum(t.invalid for t in turns),
            "generated_tokens": generated, "zero_advantage_episodes": zero_groups,
            **group_counts, "train_tokens": stats["train_tokens"], "skipped_samples": stats["skipped_samples"],
            "samples": len(samples), "stale_samples": sum(s.policy_version < iteration - 1 for s in samples),
            "search_samples": sum(s.policy_version == SEARCH_POLICY_VERSION for s in samples),
            **step_group_counts(config, episodes),
        }
        totals = _reduce(acc, local)
        n = max(totals["episodes"], 1)
        agreement = _gathered_max(acc, stats["logprob_max_abs_diff"])
        metrics = {
            "iteration": iteration,
            "success_rate": totals["successes"] / n,
            # with filter_groups, success_rate is over the kept groups (biased towards 0.5); this is over all drawn
            "drawn_success_rate": totals["drawn_successes"] / max(totals["drawn_episodes"], 1),
            "mean_return": totals["return_sum"] / n,
            "mean_turns": totals["turns"] / n,
            "invalid_action_rate": totals["invalid_turns"] / max(totals["turns"], 1),
            "zero_advantage_fraction": totals["zero_advantage_episodes"] / n,
            **{k: int(totals[k]) for k in ("groups_drawn", "groups_kept", "groups_dropped", "samples", "stale_samples",
                                           "search_samples", "skipped_samples", "train_tokens")},
            "failed_episodes": int(failed), **{k: int(v) for k, v in failures.items() if k != "drawn"},
            **step_group_metrics(totals),
            **{k: round(v, 6) if isinstance(v, float) else v for k, v in stats.items()
               if k not in ("train_tokens", "skipped_samples", "nonfinite_steps")},
            "logprob_max_abs_diff": agreement,
            "rollout_tokens_per_s": totals["generated_tokens"] / max(rollout_seconds, 1e-9),
            "train_tokens_per_s": totals["train_tokens"] / max(update_seconds, 1e-9),
            "rollout_seconds": rollout_seconds, "update_seconds": update_seconds,
        }
        if config.eval_episodes and config.eval_every and iteration % config.eval_every == 0:
            metrics.update({f"eval_{k}": v for k, v in trainer.evaluate(f"iter{iteration}").items()
                            if isinstance(v, (int, float))})
        if config.report_to != "none":
            acc.log({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
                    step=iteration)
        if acc.is_main_process:
            with metrics_file.open("a") as fh:
                fh.write(json.dumps(metrics) + "\n")
            diff = "n/a" if agreement is None else f"{agreement:.1e}"
            log(f"iter {iteration}/{config.iterations}  success {metrics['success_rate']:.2f}  "
                f"return {metrics['mean_return']:.2f}  turns {metrics['mean_turns']:.1f}  "
                f"invalid {metrics['invalid_action_rate']:.2f}  clip {metrics['clip_fraction']:.3f}  "
                f"logprob diff {diff}  groups kept {metrics['groups_kept']}/{metrics['groups_drawn']}  "
                f"skipped {metrics['skipped_samples']}/{metrics['samples']} samples  "
                f"({rollout_seconds:.1f}s rollout, {update_seconds:.1f}s update)")
        if config.checkpoint_every and (iteration % config.checkpoint_every == 0 or iteration == config.iterations):
            trainer.save_checkpoint(iteration)

    acc.wait_for_everyone()
    if config.eval_episodes and "after_rl" in config.eval_phases and "after_rl" not in evals:
        record("after_rl")
    if config.report_to != "none":
        if evals:   # an empty log would be an empty row at the last step in trackio; MLflow refuses "@" in a name
            acc.log({f"eval_{phase.replace('@', ':')}_success_rate": e["success_rate"] for phase, e in evals.items()},
                    step=config.iterations)
        acc.end_training()
        for key in trainer.tracker_env:
            os.environ.pop(key, None)
    trainer.save_policy(run_dir / "final")
    if acc.is_main_process:
        if trainer.critic is not None:   # the value head or value model, beside the policy
            torch.save(trainer.critic.state_dict(), run_dir / "final" / "critic.pt")
        if trainer.noise is not NO_NOISE:   # ALP's σ per layer, beside the model or adapter
            torch.save(trainer.noise.state_dict(), run_dir / "final" / "alp_sigma.pt")
        write_curves(metrics_file, run_dir / "curves.png", evals)
        if evals and trainer.progress:
            print_eval_table(evals)
    return run_dir


RESUMABLE_CHANGES = ("output_dir", "iterations", "checkpoint_every", "eval_every", "env_step_timeout", "max_failed_fraction",
                     "max_nonfinite_steps")   # settings a resumed run may change; any other change is refused


def check_resumable(config: TrainConfig) -> None:
    """Refuse a resume that would silently do something else: a run folder with a run but no intact checkpoint,
    or a config that differs from the run's (other than RESUMABLE_CHANGES). A folder with no run starts fresh."""
    run_dir = Path(config.output_dir)
    saved_file = run_dir / "config.yaml"
    has_run = (run_dir / "metrics.jsonl").exists() or saved_file.exists()
    if not has_run:
        return
    checkpoints = [p for p in (run_dir / "checkpoints").glob("iter-*") if not p.name.endswith(".tmp")] \
        if (run_dir / "checkpoints").exists() else []
    if not any(verify_manifest(p) is None for p in checkpoints):
        raise RunError(f"--resume: {run_dir} holds a run but no intact checkpoint to resume from "
                                f"(checkpoint_every was {config.checkpoint_every}); start it again in another "
                                "output_dir, or remove this one")
    if saved_file.exists():
        saved = yaml.safe_load(saved_file.read_text()) or {}
        now = config.to_dict()
        changed = sorted(k for k in now if k in saved and saved[k] != now[k] and k not in RESUMABLE_CHANGES)
        if changed:
            detail = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed)
            raise RunError(f"--resume: the config differs from the run's in {detail}; only "
                             f"{', '.join(RESUMABLE_CHANGES)} may change when resuming")


def _gathered_max(accelerator: Accelerator, value: float | None) -> float | None:
    """The largest value over processes; None where no process measured one."""
    if accelerator.num_processes == 1:
        return value
    gathered = accelerator.gather(torch.tensor([-1.0 if value is None else value], device=accelerator.device))
    best = float(gathered.max())
    return None if best < 0 else best


def print_eval_table(evals: dict) -> None:
    """The held-out evaluation phases as a small table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="held-out evaluation (greedy)")
    for column in ("phase", "split", "success", "score", "invalid", "turns", "episodes"):
        table.add_column(column, justify="left" if column in ("phase", "split") else "right")
    for key in sorted(evals, key=lambda k: EVAL_PHASES.index(k.split("@")[0]) if k.split("@")[0] in EVAL_PHASES else 9):
        e = evals[key]
        table.add_row(key.split("@")[0], e["split"], f"{e['success_rate']:.3f}", f"{e['mean_score']:.3f}",
                      f"{e['invalid_action_rate']:.3f}", f"{e['mean_turns']:.2f}", str(e["episodes"]))
    Console().print(table)

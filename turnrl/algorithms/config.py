"""`TrainConfig`: every setting of `turnrl train`, documented field by field.

The YAML file and `--key value` overrides read the same dataclass; the help text of each field is its
documentation (`turnrl train --help-config` prints it). Unknown keys and invalid values fail before
any work, naming the valid choices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from turnrl.agents.prompts import PROMPT_STYLES, parse_context

# Presets: each names its defaults (advantage estimator, ratio level, clip-bias normalisation); the rest of the
# loop is shared (DESIGN.md). The PPO family's ratio level and clip-bias setting define the preset: a config that
# sets them otherwise names the preset it would be. Every preset composes with every advantage estimator.
PRESETS = {
    "grpo": {"advantage": "grpo"},
    "gigpo": {"advantage": "gigpo"},
    "hgpo": {"advantage": "hgpo"},
    # ST-PPO paper (research notes §1.5): token-PPO baseline, Turn-PPO, S-PPO, ST-PPO; a turn-level critic with GAE.
    "ppo": {"advantage": "gae", "ratio_level": "token", "clip_bias_norm": False},
    "turn-ppo": {"advantage": "gae", "ratio_level": "turn", "clip_bias_norm": False},
    "s-ppo": {"advantage": "gae", "ratio_level": "token", "clip_bias_norm": True},
    "st-ppo": {"advantage": "gae", "ratio_level": "turn", "clip_bias_norm": True},
    # ALP paper (research notes §2): Seq-ALP with GRPO advantages, the dual-clip window [0.5, 4.0] and c = 3
    "alp": {"advantage": "grpo", "ratio_level": "sequence", "perturbation": "alp", "clip_eps": 0.5,
            "clip_eps_high": 3.0, "dual_clip": 3.0},
}
ALP_SETTINGS = {   # perturbation alp: defaults (alp.ALP_DEFAULTS has the sources)
    "alp_sigma": 1e-3, "alp_sigma_learning_rate": 1e-2, "alp_learnable": True, "alp_regulariser": False}
ALGORITHMS = tuple(PRESETS)
PPO_FAMILY = ("ppo", "turn-ppo", "s-ppo", "st-ppo")   # their ratio level and clip-bias setting define them
# (alp's ratio level is a default: ratio_level token gives Token-ALP)
ADVANTAGES = ("grpo", "rloo", "gigpo", "hgpo", "gae")
CRITICS = ("head", "model")
CRITIC_DEFAULTS = {   # Search-R1's PPO defaults (research notes §1.5, marked there as inferred), TRL's value clip
    "critic": "head", "gae_lambda": 1.0, "vf_coef": 0.1, "value_clip": 0.2}
STEP_ADVANTAGES = ("gigpo", "hgpo")       # step-level estimators: discounted step returns, window memory
DEFAULT_HISTORY = 2                       # verl-agent's history_length for GiGPO and HGPO
DTYPES = ("float32", "bfloat16", "float16", "float64")   # float64: exact references on CPU (tests)
REPORT_TO = ("none", "tensorboard", "wandb", "trackio", "mlflow")
EVAL_PHASES = ("zero_shot", "warm_start", "after_rl")   # the held-out evaluations of a run, in order


def _f(default, help: str, **kw):
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    env: str = _f("lights", "registered environment name (see `turnrl envs`)")
    env_kwargs: dict = _f({}, "keyword arguments for the environment factory")
    env_module: str | None = _f(None, "a .py file or module imported first (it may call register_env)")
    model: str = _f("tiny", "hub id, local path, or alias: tiny, smollm2-135m")
    dtype: str = _f("float32", "model dtype", choices=DTYPES)
    lora: bool = _f(False, "train a LoRA adapter instead of all weights (reference = adapter off)")
    lora_rank: int = _f(8, "LoRA rank")
    lora_alpha: int = _f(16, "LoRA alpha")
    algorithm: str = _f("grpo", "preset: grpo (episode advantages, full context), gigpo or hgpo (step advantages, "
                                "window:history_length context, as in their papers); ppo (token ratio), turn-ppo "
                                "(turn ratio), s-ppo (token ratio + clip-bias norm), st-ppo (turn ratio + clip-bias "
                                "norm), each with a turn-level critic and GAE by default", choices=ALGORITHMS)
    advantage: str | None = _f(None, "advantage estimator (default: the preset's): grpo, rloo (leave-one-out), "
                                     "gigpo (episode + anchor-state step groups), hgpo (hierarchy of history groups), "
                                     "gae (turn-level critic, GAE over turns)", choices=ADVANTAGES)
    history_length: int | None = _f(None, "K: the window:K prompt memory and HGPO's deepest level (default: k of "
                                          "context window:k; 2 for hgpo with full context)")
    gamma: float | None = _f(None, "discount of step returns for gigpo and hgpo (default 0.95), of turns for gae "
                                   "(default 1.0)")
    gae_lambda: float | None = _f(None, "gae: lambda of GAE over turns (default 1.0, Search-R1's)")
    critic: str | None = _f(None, "gae: head (a value head on the policy's last hidden states, shared trunk; with "
                                  "LoRA it trains with the adapter) or model (a separate value model from the same "
                                  "weights, fully trained) (default head)", choices=CRITICS)
    vf_coef: float | None = _f(None, "gae: weight of the value loss (default 0.1, TRL's)")
    value_clip: float | None = _f(None, "gae: clip range of the value loss around the values at rollout (default 0.2)")
    critic_learning_rate: float | None = _f(None, "gae: learning rate of the critic's parameters (default 10 x "
                                                  "learning_rate, Search-R1's critic/actor ratio)")
    step_advantage_weight: float | None = _f(None, "omega, weight of GiGPO's step advantage (default 1.0)")
    hgpo_alpha: float | None = _f(None, "HGPO level weights (k+1)^alpha (default 1.0; 0 = equal weights)")
    hgpo_base_group: bool | None = _f(None, "HGPO: add GiGPO's episode advantage as a level of weight 1 "
                                            "(default false)")
    iterations: int = _f(10, "number of rollout/update iterations")
    tasks_per_iteration: int = _f(4, "distinct tasks rolled out per iteration (across all processes)")
    group_size: int = _f(4, "rollouts per task; a task's rollouts form one advantage group")
    split: str = _f("train", "task split to train on")
    context: str | None = _f(None, "'full' (one growing conversation) or 'window:k' (last k steps in each prompt); "
                                   "default: window:history_length if set, else full for grpo/rloo, window:2 for "
                                   "gigpo/hgpo")
    max_turns: int = _f(6, "maximum agent turns per episode")
    max_new_tokens: int = _f(32, "maximum generated tokens per turn")
    temperature: float = _f(1.0, "sampling temperature (log-probs use the same temperature)")
    top_p: float = _f(1.0, "nucleus sampling threshold")
    invalid_penalty: float = _f(0.1, "penalty for a response without a parseable action")
    show_admissible_actions: bool = _f(True, "list the admissible actions in each prompt where the env has them")
    prompt_style: str = _f("compact", "prompt text: compact (nothing said twice; fewer tokens) or verl-agent (verl-agent's "
                                      "wording, every observation verbatim; the paper configs' reference)",
                           choices=PROMPT_STYLES)
    cross_turn_cache: bool | None = _f(None, "full context: keep each live conversation's KV cache between turns and "
                                             "prefill only the new segment (default true; false for models whose "
                                             "cache cannot be extended)")
    env_step_timeout: float | None = _f(300.0, "seconds an environment's reset or step may take before its episode "
                                               "fails (run in a worker thread; null = no limit)")
    max_failed_fraction: float = _f(0.5, "stop the run (its last checkpoint intact) when more than this share of an "
                                         "iteration's episodes failed in the environment (raised, malformed result "
                                         "or time-out); failed episodes and their groups are dropped")
    max_nonfinite_steps: int = _f(3, "stop the run (its last checkpoint intact) after this many optimizer steps in a "
                                     "row whose loss or gradient was NaN or infinite (each is skipped)")
    filter_groups: bool = _f(False, "dynamic sampling (DAPO, verl-agent filter_groups): drop groups whose returns are "
                                    "all equal and draw more task groups until tasks_per_iteration informative ones")
    filter_groups_max_draws: int | None = _f(None, "filter_groups: at most this many draws of tasks_per_iteration "
                                                   "task groups per iteration (default 4)")
    warm_start_episodes: int = _f(0, "behaviour cloning from the environment's expert before the first iteration: "
                                     "this many expert episodes of `split` (0 = no warm start); cached per settings")
    warm_start_epochs: float | None = _f(None, "warm start: passes over the demonstrations (default 1)")
    warm_start_learning_rate: float | None = _f(None, "warm start: learning rate (default 1e-4)")
    warm_start_batch_size: int | None = _f(None, "warm start: sequences per step (default 8)")
    learning_rate: float = _f(1e-5, "AdamW learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    epochs: int = _f(1, "passes over each iteration's samples")
    minibatch_size: int = _f(8, "at most this many training sequences per optimizer step, over all processes (an "
                                    "iteration's samples are split into equal minibatches)")
    micro_batch_size: int = _f(4, "training sequences per forward/backward (gradient accumulation)")
    loss_aggregation: str = _f(
        "episode", "episode: mean over each episode's agent tokens, then over episodes (GRPO's 1/|o| weighting); "
        "token: mean over all agent tokens of the minibatch (DAPO)", choices=("episode", "token"))
    clip_eps: float | None = _f(None, "PPO clip range epsilon (the lower side, 1 - eps, when clip_eps_high is set) "
                                      "(default 0.2; 0.5 for alp)")
    clip_eps_high: float | None = _f(None, "upper clip range, 1 + eps_high (DAPO's clip-higher; default clip_eps)")
    dual_clip: float | None = _f(None, "dual-clip constant c > 1: for negative advantages the objective is bounded "
                                       "below by c * A (default off)")
    clip_bias_norm: bool | None = _f(None, "S-PPO/ST-PPO clipping-bias normalisation: scale each step's policy gradient by "
                                     "1 / max(1, |C| / clip_bias_tau), C the gradient clipping removed (an extra "
                                     "backward per micro-batch; |C| logged as clip_bias_norm_mean/max) (default: the preset's; off for grpo, "
                                            "gigpo, hgpo)")
    clip_bias_tau: float | None = _f(None, "clip_bias_norm: the |C| above which the gradient is scaled down (default 1)")
    max_staleness: int = _f(0, "also train on the rollouts of the last N iterations, with the behaviour log-probs "
                               "they were generated with (0 = fresh rollouts only); logs clip_fraction_staleness{k}")
    search_episodes: str | None = _f(None, "an episodes.jsonl of search episodes (`turnrl search`, with behaviour "
                                           "log-probs) trained on beside fresh rollouts as off-policy data; needs "
                                           "advantage gae (one best episode per task forms no group)")
    search_episodes_per_iteration: int | None = _f(None, "search_episodes: how many join each iteration, dealt in "
                                                         "order and cycled (default tasks_per_iteration)")
    perturbation: str | None = _f(None, "alp: learnable Gaussian noise on every decoder layer's input during the "
                                        "update, the perturbed policy the ratio's numerator (ALP); none (default; "
                                        "alp for the alp preset)", choices=("none", "alp"))
    alp_sigma: float | None = _f(None, "alp: initial sigma of each layer's noise (default 1e-3; the authors' 1e-8 "
                                       "is below float32 resolution of the hidden states, so it starts as no noise)")
    alp_sigma_learning_rate: float | None = _f(None, "alp: learning rate of log sigma (default 1e-2, the authors')")
    alp_learnable: bool | None = _f(None, "alp: sigma trained (default true) or fixed")
    alp_layers: list | None = _f(None, "alp: decoder layer indices to perturb (default all: all beat partial ranges "
                                       "in the paper)")
    alp_regulariser: bool | None = _f(None, "alp: add the sigma regulariser 1e-3 sigma^2 - 1e-3 log sigma^2 (the "
                                            "authors' code default; default false)")
    ratio_level: str | None = _f(None, "importance ratio: token (PPO), turn (ST-PPO/Turn-PPO: geometric mean of the "
                                       "token ratios of each turn) or sequence (GSPO: of each sample's agent tokens) "
                                       "(default: the preset's; token for grpo, gigpo, hgpo)",
                          choices=("token", "turn", "sequence"))
    kl_coef: float = _f(0.0, "weight of the k3 KL penalty to the reference policy (0 = off)")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    conventions: str = _f("paper", "group advantages' conventions: paper (population std, penalties out of the "
                                   "episode score) or verl-agent (its code's: sample std, penalty in the episode "
                                   "score, per-step penalty in multi-turn GRPO, HGPO weights 2:3:4; docs/parity.md)",
                          choices=("paper", "verl-agent"))
    advantage_norm: str | None = _f(None, "group normalisation of grpo/gigpo/hgpo (for gae: over the iteration's "
                                          "turns, as verl whitens GAE): mean_std (default) or mean",
                                    choices=("mean_std", "mean"))
    eval_every: int = _f(0, "also evaluate on eval_split every N iterations (0 = never during training)")
    eval_episodes: int = _f(0, "greedy held-out evaluation on this many eval_split tasks before training, after the "
                               "warm start and after RL, written to eval.json (0 = no evaluation)")
    eval_split: str = _f("test", "task split for evaluation")
    eval_extra_splits: list | None = _f(None, "eval_episodes: also evaluate every phase on these splits (eval.json "
                                              "keys PHASE@SPLIT), e.g. ALFWorld's valid_unseen beside valid_seen")
    eval_phases: list | None = _f(None, "eval_episodes: which held-out evaluations to run, of zero_shot, warm_start, "
                                        "after_rl (default all; a sweep from one warm start needs them once)")
    report_to: str = _f("none", "experiment tracker that also receives metrics.jsonl's numbers (as transformers' "
                                "report_to), offline by default, files in the run folder: none, tensorboard, wandb, "
                                "trackio, mlflow (each needs its package: pip install turnrl[NAME])",
                        choices=REPORT_TO)
    checkpoint_every: int = _f(5, "write a resumable checkpoint every N iterations (0 = never)")
    seed: int = _f(0, "seed for task sampling, generation and initialisation")
    output_dir: str = _f("runs/turnrl", "run folder: config.yaml, metrics.jsonl, curves.png, checkpoints, final/")

    def __post_init__(self):
        self.resolve()

    def resolve(self) -> TrainConfig:
        """Fill the settings left empty from the preset and the advantage estimator, and refuse settings
        that would do nothing in this combination. Idempotent: a resolved config resolves to itself."""
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm: {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        preset = PRESETS[self.algorithm]
        for name in ("ratio_level", "clip_bias_norm") if self.algorithm in PPO_FAMILY else ():
            if name in preset and getattr(self, name) is not None and getattr(self, name) != preset[name]:
                wanted = {k: getattr(self, k) if k == name else v for k, v in preset.items() if k != "advantage"}
                other = [a for a, p in PRESETS.items() if all(p.get(k) == v for k, v in wanted.items())]
                raise ConfigError(f"algorithm {self.algorithm} means {name}: {preset[name]}; for {name}: "
                                  f"{getattr(self, name)} use algorithm {other[0] if other else 'grpo'}")
        self.advantage = self.advantage or preset["advantage"]
        if self.advantage not in ADVANTAGES:
            raise ConfigError(f"advantage: {self.advantage!r} is not one of {', '.join(ADVANTAGES)}")
        self.ratio_level = self.ratio_level or preset.get("ratio_level", "token")
        self.perturbation = self.perturbation or preset.get("perturbation", "none")
        for name, default in (("clip_eps", 0.2), ("clip_eps_high", None), ("dual_clip", None)):
            if getattr(self, name) is None:
                setattr(self, name, preset.get(name, default))
        for name, default in ALP_SETTINGS.items():
            if self.perturbation != "alp" and getattr(self, name) is not None:
                raise ConfigError(f"{name} applies with perturbation: alp only")
            if self.perturbation == "alp" and getattr(self, name) is None:
                setattr(self, name, default)
        if self.perturbation != "alp" and self.alp_layers is not None:
            raise ConfigError("alp_layers applies with perturbation: alp only")
        if self.alp_layers is not None and (not isinstance(self.alp_layers, list) or not self.alp_layers or any(
                isinstance(i, bool) or not isinstance(i, int) for i in self.alp_layers)):
            raise ConfigError(f"alp_layers must be a non-empty list of layer indices, got {self.alp_layers!r}")
        if self.clip_bias_norm is None:
            self.clip_bias_norm = preset.get("clip_bias_norm", False)
        step_level = self.advantage in STEP_ADVANTAGES
        only = {"gamma": (*STEP_ADVANTAGES, "gae"), "step_advantage_weight": ("gigpo",), "hgpo_alpha": ("hgpo",),
                "hgpo_base_group": ("hgpo",), **{name: ("gae",) for name in (*CRITIC_DEFAULTS, "critic_learning_rate")}}
        for name, users in only.items():
            if getattr(self, name) is not None and self.advantage not in users:
                raise ConfigError(f"{name} applies to advantage {' or '.join(users)} only, not {self.advantage}")
        if self.advantage == "gae":
            for name, default in CRITIC_DEFAULTS.items():
                if getattr(self, name) is None:
                    setattr(self, name, default)
            self.gamma = 1.0 if self.gamma is None else self.gamma
            if self.critic_learning_rate is None:
                self.critic_learning_rate = 10 * self.learning_rate
        if self.report_to not in ("none", *REPORT_TO):
            raise ConfigError(f"report_to: {self.report_to!r} is not one of {', '.join(REPORT_TO)}")
        if self.report_to != "none":
            import importlib.util

            if importlib.util.find_spec(self.report_to) is None:
                raise ConfigError(f"report_to: {self.report_to} needs its package, which is not installed: "
                                  f"pip install 'turnrl[{self.report_to}]'")
        if self.conventions != "paper" and self.advantage not in ("grpo", "gigpo", "hgpo"):
            raise ConfigError(f"conventions: {self.conventions} applies to advantage grpo, gigpo or hgpo only, not "
                              f"{self.advantage}")
        if self.advantage_norm is not None and self.advantage == "rloo":
            raise ConfigError("advantage_norm does not apply to advantage rloo (a leave-one-out baseline, no std)")
        if self.history_length is not None and (isinstance(self.history_length, bool) or self.history_length < 0):
            raise ConfigError(f"history_length must be an integer >= 0, got {self.history_length!r}")

        if self.context is None:
            history = self.history_length if self.history_length is not None else (
                DEFAULT_HISTORY if step_level else None)
            self.context = "full" if history is None else f"window:{history}"
        try:
            window = parse_context(self.context)
        except ValueError as err:
            raise ConfigError(f"context: {err}") from None
        if window is not None:
            if self.history_length is not None and self.history_length != window:
                raise ConfigError(f"history_length ({self.history_length}) sets the window:k memory, but context is "
                                  f"{self.context}; set one of them, or both to the same k")
            self.history_length = window
        elif self.advantage == "hgpo":
            self.history_length = DEFAULT_HISTORY if self.history_length is None else self.history_length
        elif self.history_length is not None:
            raise ConfigError(f"history_length sets the window:k memory and HGPO's depth; with context full and "
                              f"advantage {self.advantage} it does nothing")

        if step_level and self.gamma is None:
            self.gamma = 0.95
        if self.advantage == "gigpo" and self.step_advantage_weight is None:
            self.step_advantage_weight = 1.0
        if self.advantage == "hgpo":
            self.hgpo_alpha = 1.0 if self.hgpo_alpha is None else self.hgpo_alpha
            self.hgpo_base_group = bool(self.hgpo_base_group)
        if self.advantage != "rloo" and self.advantage_norm is None:
            self.advantage_norm = "mean_std"

        if self.context != "full" and self.cross_turn_cache is not None:
            raise ConfigError(f"cross_turn_cache applies to context full only (context is {self.context}: every "
                              "prompt is fresh)")
        if self.context == "full" and self.cross_turn_cache is None:
            self.cross_turn_cache = True
        if not self.clip_bias_norm and self.clip_bias_tau is not None:
            raise ConfigError("clip_bias_tau applies with clip_bias_norm: true only")
        if self.clip_bias_norm and self.clip_bias_tau is None:
            self.clip_bias_tau = 1.0
        if self.search_episodes is None and self.search_episodes_per_iteration is not None:
            raise ConfigError("search_episodes_per_iteration applies with search_episodes only")
        if self.search_episodes is not None:
            if self.advantage != "gae":
                raise ConfigError(f"search_episodes needs advantage gae: search gives one episode per task, which "
                                  f"forms no group for advantage {self.advantage} (every advantage would be 0)")
            if self.search_episodes_per_iteration is None:
                self.search_episodes_per_iteration = self.tasks_per_iteration
        if not self.filter_groups and self.filter_groups_max_draws is not None:
            raise ConfigError("filter_groups_max_draws applies with filter_groups: true only")
        if self.filter_groups and self.filter_groups_max_draws is None:
            self.filter_groups_max_draws = 4
        if self.eval_extra_splits is not None and not self.eval_episodes:
            raise ConfigError("eval_extra_splits applies with eval_episodes > 0 only")
        if self.eval_phases is not None and not self.eval_episodes:
            raise ConfigError("eval_phases applies with eval_episodes > 0 only")
        if self.eval_episodes and self.eval_phases is None:
            self.eval_phases = [p for p in EVAL_PHASES if p != "warm_start" or self.warm_start_episodes]
        warm = {"warm_start_epochs": 1.0, "warm_start_learning_rate": 1e-4, "warm_start_batch_size": 8}
        for name, default in warm.items():
            if not self.warm_start_episodes and getattr(self, name) is not None:
                raise ConfigError(f"{name} applies with warm_start_episodes > 0 only")
            if self.warm_start_episodes and getattr(self, name) is None:
                setattr(self, name, default)
        return self

    @property
    def eval_splits(self) -> list[str]:
        """Every split the held-out evaluations run on: eval_split, then eval_extra_splits."""
        return [self.eval_split, *(self.eval_extra_splits or [])]

    def validate(self) -> TrainConfig:
        self.resolve()
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise ConfigError(f"{f.name}: {value!r} is not one of {', '.join(map(str, choices))}")
        if self.gamma is not None and not 0 <= self.gamma <= 1:
            raise ConfigError(f"gamma must be in [0, 1], got {self.gamma}")
        positive = ("iterations", "tasks_per_iteration", "group_size", "max_turns", "max_new_tokens", "epochs",
                    "minibatch_size", "micro_batch_size", "lora_rank")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.filter_groups and self.filter_groups_max_draws < 1:
            raise ConfigError(f"filter_groups_max_draws must be >= 1, got {self.filter_groups_max_draws}")
        if self.warm_start_episodes and (self.warm_start_epochs <= 0 or self.warm_start_learning_rate <= 0
                                         or self.warm_start_batch_size < 1):
            raise ConfigError("warm_start_epochs and warm_start_learning_rate must be > 0, warm_start_batch_size >= 1")
        if self.eval_phases is not None and (not isinstance(self.eval_phases, list) or not self.eval_phases or any(
                phase not in EVAL_PHASES for phase in self.eval_phases)):
            raise ConfigError(f"eval_phases must be a non-empty list of {', '.join(EVAL_PHASES)}, got "
                              f"{self.eval_phases!r}")
        if self.eval_extra_splits is not None and (not isinstance(self.eval_extra_splits, list) or any(
                not isinstance(split, str) or split == self.eval_split for split in self.eval_extra_splits)):
            raise ConfigError(f"eval_extra_splits must be a list of split names other than eval_split "
                              f"({self.eval_split}), got {self.eval_extra_splits!r}")
        if self.eval_phases and "warm_start" in self.eval_phases and not self.warm_start_episodes:
            raise ConfigError("eval_phases: warm_start needs warm_start_episodes > 0")
        for name in ("eval_every", "eval_episodes", "checkpoint_every", "warm_start_episodes", "max_staleness"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.env_step_timeout is not None and not self.env_step_timeout > 0:
            raise ConfigError(f"env_step_timeout must be > 0 seconds (or null for no limit), got {self.env_step_timeout}")
        if not 0 <= self.max_failed_fraction <= 1:
            raise ConfigError(f"max_failed_fraction must be in [0, 1], got {self.max_failed_fraction}")
        if self.max_nonfinite_steps < 1:
            raise ConfigError(f"max_nonfinite_steps must be >= 1, got {self.max_nonfinite_steps}")
        if self.minibatch_size % self.micro_batch_size:
            raise ConfigError(f"minibatch_size ({self.minibatch_size}) must be a multiple of micro_batch_size "
                              f"({self.micro_batch_size})")
        import math

        numbers = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), float)}
        for name, value in numbers.items():
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value}")
        for name in ("invalid_penalty", "max_grad_norm", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0 for training (sampling); greedy decoding has no log-probs")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 < self.clip_eps < 1:
            raise ConfigError(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.clip_eps_high is not None and self.clip_eps_high <= 0:
            raise ConfigError(f"clip_eps_high must be > 0, got {self.clip_eps_high}")
        if self.clip_bias_norm and self.clip_bias_tau <= 0:
            raise ConfigError(f"clip_bias_tau must be > 0, got {self.clip_bias_tau}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ConfigError(f"dual_clip must be > 1 (a lower bound c * A for negative advantages), got {self.dual_clip}")
        if self.advantage == "gae":
            if not 0 <= self.gae_lambda <= 1:
                raise ConfigError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
            if self.vf_coef < 0 or self.value_clip <= 0 or self.critic_learning_rate <= 0:
                raise ConfigError("vf_coef must be >= 0, value_clip and critic_learning_rate > 0")
        if self.perturbation == "alp" and (self.alp_sigma <= 0 or self.alp_sigma_learning_rate <= 0):
            raise ConfigError("alp_sigma and alp_sigma_learning_rate must be > 0")
        if self.kl_coef < 0 or self.learning_rate <= 0:
            raise ConfigError("kl_coef must be >= 0 and learning_rate > 0")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A config that cannot run: says which key and what is allowed."""


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value: Any) -> Any:
    """Check a value's type against the field (ints may stand for floats; None only where allowed)."""
    f = _FIELDS[name]
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError(f"{name} may not be empty")
    expected = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list}
    base = kind.split("|")[0].strip()
    want = expected.get(base)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is float and isinstance(value, str):   # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if want is not None and (not isinstance(value, want) or (want is int and isinstance(value, bool))):
        article = "an" if base[0] in "aeiou" else "a"
        raise ConfigError(f"{name} must be {article} {base}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (optional) and apply overrides; validate before returning."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            raise ConfigError(f"{path} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of key: value")
        values.update(loaded)
    values.update(overrides or {})
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}. Valid keys: {', '.join(_FIELDS)}")
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()}).validate()


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`["--iterations", "3", "--lora", "true"]` -> {"iterations": 3, "lora": True} (values read as YAML)."""
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"expected --key value, got {arg!r}")
        key = arg[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"--{key} needs a value")
            raw = args[i + 1]
            i += 2
        key = key.replace("-", "_")
        if key not in _FIELDS:
            raise ConfigError(f"unknown config key {key!r}. Valid keys: {', '.join(_FIELDS)}")
        overrides[key] = raw if _FIELDS[key].type in ("str", "str | None") else yaml.safe_load(raw)
    return overrides


def describe_config() -> str:
    """Every key with its default (as resolved for the default preset) and help text."""
    lines = []
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default = getattr(defaults, f.name)
        choices = f.metadata.get("choices")
        extra = f" (one of: {', '.join(choices)})" if choices else ""
        lines.append(f"{f.name} = {default!r}: {f.metadata['help']}{extra}")
    return "\n".join(lines)

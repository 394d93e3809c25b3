"""The `turnrl` command line: envs | doctor | train | eval | sft | search | dpo | agentq | report | play.

Every command that takes `--env` also takes `--env-module FILE_OR_MODULE`, imported first so that a
user's own file can call `register_env`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reinforcement learning for LLM agents in multi-turn text environments.")
console = Console()

EnvModule = typer.Option(None, "--env-module", help="a .py file or module imported first (may call register_env)")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def _load_env_module(env_module: str | None) -> None:
    from turnrl.environments import load_env_module

    if env_module:
        try:
            load_env_module(env_module)
        except (FileNotFoundError, ModuleNotFoundError) as err:
            _fail(str(err))


def _check_env(env: str, split: str | None = None, env_kwargs: dict | None = None):
    from turnrl.environments import list_envs, make_env

    if env not in list_envs():
        _fail(f"unknown environment {env!r}; registered: {', '.join(list_envs())} "
              "(a user environment needs --env-module FILE_OR_MODULE)")
    try:
        instance = make_env(env, **(env_kwargs or {}))
    except (TypeError, ValueError) as err:   # a wrong keyword or value for this environment's factory
        _fail(f"environment {env!r} cannot be made with env_kwargs {env_kwargs}: {err}")
    if split is not None:
        try:
            instance.tasks(split)
        except ValueError as err:
            _fail(str(err))
    return instance


def _check_model(name: str | None) -> None:
    """A missing model folder or an unreachable hub fails at once, before any other work."""
    if name is None:
        return
    from turnrl.agents.models import MODEL_ALIASES, ModelNotFoundError, check_model_name

    if name in MODEL_ALIASES:
        return
    try:
        check_model_name(name)
    except ModelNotFoundError as err:
        _fail(str(err))


def _check_writable(folder: Path) -> None:
    """Fail before any work when outputs cannot be written under `folder` (created if missing)."""
    from turnrl.outputs import check_writable

    try:
        check_writable(folder)
    except OSError as err:
        _fail(str(err))


def _parse_json(value: str | None, name: str) -> dict:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        _fail(f"{name} must be a JSON object: {err}")
    if not isinstance(parsed, dict):
        _fail(f"{name} must be a JSON object")
    return parsed


@app.command()
def envs(env_module: str | None = EnvModule) -> None:
    """List the registered environments."""
    _load_env_module(env_module)
    from turnrl.environments import list_envs

    for name in list_envs():
        console.print(escape(name))


@app.command()
def doctor(
    model: str = typer.Option("tiny", help="hub id, local path, or alias (tiny, smollm2-135m)"),
    env: str = typer.Option("guess-number", help="environment whose turns are checked"),
    env_module: str | None = EnvModule,
    env_kwargs: str | None = typer.Option(None, help="JSON object of environment keyword arguments"),
    episodes: int = typer.Option(6, help="rollouts per context mode"),
    max_turns: int = typer.Option(3),
    max_new_tokens: int = typer.Option(24),
    temperature: float = typer.Option(1.0),
    dtype: str = typer.Option("float32"),
) -> None:
    """Check a model: chat template prefix preservation and log-prob agreement (exit 1 if > 1e-4 in float32)."""
    _check_model(model)
    _load_env_module(env_module)
    kwargs = _parse_json(env_kwargs, "--env-kwargs")
    _check_env(env, env_kwargs=kwargs)
    from turnrl.agents.doctor import TOLERANCE, logprob_agreement, template_check
    from turnrl.agents.models import load_model
    from turnrl.agents.policy import Policy

    model_obj, tokenizer = load_model(model, dtype=dtype)
    preserving, detail = template_check(tokenizer, env, env_kwargs=kwargs)
    console.print(f"chat template prefix-preserving: {'yes' if preserving else 'no'} ({detail})")
    contexts = ("full", "window:2") if preserving else ("window:2",)
    policy = Policy(model_obj, tokenizer, temperature=temperature, max_new_tokens=max_new_tokens)
    diffs = logprob_agreement(policy, env, contexts=contexts, episodes=episodes, max_turns=max_turns,
                              env_kwargs=kwargs)
    for context, diff in diffs.items():
        console.print(f"  {context}: {diff:.3e}")
    worst = max(diffs.values())
    print(f"logprob max abs diff: {worst:.3e}")
    if dtype == "float32" and worst > TOLERANCE:
        console.print(f"[red]FAIL[/red]: generation and recomputed log-probs differ by more than {TOLERANCE:g}")
        raise typer.Exit(1)
    if not preserving:
        console.print("[yellow]the template is not prefix-preserving: use context window:k[/yellow]")
        raise typer.Exit(1)
    console.print("[green]OK[/green]")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", help="YAML config; every key has a default"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in output_dir from its last checkpoint"),
    help_config: bool = typer.Option(False, "--help-config", help="list every config key with its default"),
) -> None:
    """Train with a config file and `--key value` overrides (see --help-config)."""
    from turnrl.algorithms.config import ConfigError, describe_config, load_config, parse_overrides

    if help_config:
        print(describe_config())
        return
    try:
        cfg = load_config(config, parse_overrides(list(ctx.args)))
    except (ConfigError, FileNotFoundError) as err:
        _fail(str(err))
    _load_env_module(cfg.env_module)
    _check_model(cfg.model)
    _check_env(cfg.env, cfg.split, cfg.env_kwargs)
    if cfg.eval_episodes:
        for split in cfg.eval_splits:
            _check_env(cfg.env, split, cfg.env_kwargs)
    from turnrl.algorithms.trainer import RunError
    from turnrl.algorithms.trainer import train as run_training

    try:
        run_dir = run_training(cfg, resume=resume)
    except (FileExistsError, RunError) as err:
        _fail(str(err))
    if os.environ.get("RANK", "0") == "0":   # once under several processes
        console.print(f"run folder: {escape(str(run_dir))}")


@app.command("eval")
def eval_command(
    env: str = typer.Option(..., help="environment name"),
    model: str | None = typer.Option(None, help="model to evaluate (hub id, path, alias, or a run's final/)"),
    policy: str | None = typer.Option(None, help="scripted policy instead of a model: expert or random"),
    episodes: int = typer.Option(20, help="number of episodes (tasks from the start of the split)"),
    split: str = typer.Option("test", help="task split"),
    output: Path = typer.Option(Path("eval.json"), help="summary JSON; trajectories go beside it as .jsonl"),
    env_module: str | None = EnvModule,
    env_kwargs: str | None = typer.Option(None, help="JSON object of environment keyword arguments"),
    context: str = typer.Option("full", help="full or window:k"),
    max_turns: int = typer.Option(10),
    max_new_tokens: int = typer.Option(64),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    seed: int = typer.Option(0),
    prompt_style: str = typer.Option("compact", help="compact or verl-agent (match the training run)"),
    cross_turn_cache: bool = typer.Option(True, help="full context: keep the KV cache between turns"),
    search: bool = typer.Option(False, "--search", help="act by Monte-Carlo tree search from the current state at "
                                                       "each step (Agent Q + MCTS); proposals sample at --temperature, "
                                                       "or 1.0 when it is 0"),
    simulations: int = typer.Option(16, "--simulations", help="--search: simulations per step"),
) -> None:
    """Evaluate a model or a scripted policy; writes a JSON summary and JSONL trajectories."""
    _load_env_module(env_module)
    kwargs = _parse_json(env_kwargs, "--env-kwargs")
    instance = _check_env(env, split, kwargs)
    if (model is None) == (policy is None):
        _fail("give exactly one of --model M or --policy expert|random")
    _check_model(model)
    if policy is not None and policy not in ("expert", "random"):
        _fail(f"--policy must be one of: expert, random (got {policy!r})")
    if search and policy is not None:
        _fail("--search acts with a model's proposals: give --model M, not --policy")
    if simulations < 1:
        _fail(f"--simulations must be at least 1 (got {simulations})")
    from turnrl.agents.prompts import PromptBuilder, parse_context

    try:
        parse_context(context)
        builder = PromptBuilder(style=prompt_style)
    except ValueError as err:
        _fail(str(err))
    if episodes < 1 or max_turns < 1:
        _fail(f"--episodes and --max-turns must be at least 1 (got {episodes} and {max_turns})")
    trajectories = output.with_suffix(".jsonl")
    if trajectories == output:
        _fail(f"--output {output} would be overwritten by the trajectories ({trajectories}); give the summary a "
              ".json name")
    _check_writable(output.parent)
    from turnrl.agents.rollout import EpisodeSpec, evaluate, expert_choice, random_choice, scripted_rollout
    from turnrl.episode import summarize

    tasks = list(instance.tasks(split))
    tasks = [tasks[i % len(tasks)] for i in range(episodes)]
    if policy is not None:
        from turnrl.environments import make_env

        specs = [EpisodeSpec(task, seed, g) for g, task in enumerate(tasks)]
        envs = [make_env(env, **kwargs) for _ in specs]
        choose = expert_choice if policy == "expert" else random_choice(seed)
        try:
            played = scripted_rollout(envs, specs, choose, env_name=env, max_turns=max_turns)
        except ValueError as err:
            _fail(str(err))
    else:
        from turnrl.agents.models import load_model
        from turnrl.agents.policy import Policy

        model_obj, tokenizer = load_model(model)
        if search:
            from turnrl.search import SearchConfig, act_by_search

            agent = Policy(model_obj, tokenizer, temperature=temperature or 1.0, max_new_tokens=max_new_tokens)
            played, trees = act_by_search(agent, env, tasks, SearchConfig(simulations=simulations, max_turns=max_turns,
                                                                          context=context),
                                          env_kwargs=kwargs, seed=seed, builder=builder)
        else:
            agent = Policy(model_obj, tokenizer, temperature=temperature, max_new_tokens=max_new_tokens)
            played = evaluate(agent, env, tasks, env_kwargs=kwargs, context=context, max_turns=max_turns, seed=seed,
                              prompt_builder=builder, cross_turn_cache=cross_turn_cache)
    summary = {"env": env, "split": split, "model": model, "policy": policy or "model", **summarize(played)}
    if search:
        summary.update(search=True, simulations=simulations, env_steps=sum(t.env_steps for t in trees))
    from turnrl.outputs import write_text_atomic

    write_text_atomic(trajectories, "".join(json.dumps(e.to_json(), default=str, allow_nan=False) + "\n"
                                            for e in played))
    write_text_atomic(output, json.dumps(summary, indent=2, allow_nan=False))
    for episode in played:
        if episode.failed:
            console.print(f"[yellow]episode failed[/yellow] (task {escape(repr(episode.task))}): "
                          f"{escape(episode.error or '')}")
    print(json.dumps(summary, indent=2))
    console.print(f"trajectories: {escape(str(trajectories))}")


@app.command()
def sft(
    env: str = typer.Option(..., help="environment name"),
    model: str = typer.Option("tiny", help="model to fine-tune"),
    episodes: int = typer.Option(200, help="expert episodes to learn from"),
    output_dir: Path = typer.Option(Path("runs/sft"), help="the trained model goes to OUTPUT_DIR/final"),
    env_module: str | None = EnvModule,
    env_kwargs: str | None = typer.Option(None, help="JSON object of environment keyword arguments"),
    split: str = typer.Option("train"),
    context: str = typer.Option("full", help="full or window:k (match the training run)"),
    max_turns: int = typer.Option(10),
    epochs: float = typer.Option(1.0),
    learning_rate: float = typer.Option(1e-4),
    batch_size: int = typer.Option(8),
    lora: bool = typer.Option(False),
    seed: int = typer.Option(0),
    prompt_style: str = typer.Option("compact", help="compact or verl-agent (match the training run)"),
) -> None:
    """Behaviour cloning on expert episodes (TRL SFTTrainer, agent turns only)."""
    _check_model(model)
    _load_env_module(env_module)
    kwargs = _parse_json(env_kwargs, "--env-kwargs")
    _check_env(env, split, kwargs)
    from turnrl.agents.prompts import PromptBuilder, parse_context
    from turnrl.algorithms.sft import run_sft

    try:
        parse_context(context)
        PromptBuilder(style=prompt_style)
    except ValueError as err:
        _fail(str(err))
    final = run_sft(env=env, model=model, episodes=episodes, output_dir=output_dir, env_kwargs=kwargs, split=split,
                    context=context, max_turns=max_turns, epochs=epochs, learning_rate=learning_rate,
                    batch_size=batch_size, lora=lora, seed=seed, prompt_style=prompt_style)
    console.print(f"model saved to {escape(str(final))}")


@app.command("search")
def search_command(
    env: str = typer.Option(..., help="environment name"),
    model: str = typer.Option("tiny", help="policy (hub id, path, alias, or a run's final/)"),
    tasks: int = typer.Option(8, help="tasks searched (from the start of the split)"),
    output_dir: Path = typer.Option(Path("runs/search"), help="trees.jsonl, episodes.jsonl and pairs/ go here"),
    env_module: str | None = EnvModule,
    env_kwargs: str | None = typer.Option(None, help="JSON object of environment keyword arguments"),
    split: str = typer.Option("train", help="task split"),
    simulations: int = typer.Option(16, help="simulations per task"),
    branching: int = typer.Option(4, help="K: distinct actions proposed at each expansion"),
    exploration: float = typer.Option(1.0, help="c_exp of UCB1"),
    alpha: float = typer.Option(0.5, help="blend α·Q_mcts + (1-α)·Q_critic; 1 = no critic"),
    threshold: float = typer.Option(0.1, help="θ: preference pairs need |ΔQ| > θ"),
    context: str = typer.Option("full", help="full or window:k (match the trainer that uses the episodes)"),
    max_turns: int = typer.Option(10, help="depth limit, in agent turns"),
    max_new_tokens: int = typer.Option(64),
    temperature: float = typer.Option(1.0, help="proposal and rollout temperature"),
    batch_size: int = typer.Option(8, help="trees searched at once, their generation batched together"),
    seed: int = typer.Option(0),
    prompt_style: str = typer.Option("compact", help="compact or verl-agent (match the training run)"),
) -> None:
    """Agent Q tree search: writes the trees, each task's best trajectory and step-level preference pairs."""
    _load_env_module(env_module)
    kwargs = _parse_json(env_kwargs, "--env-kwargs")
    instance = _check_env(env, split, kwargs)
    from turnrl.agents.prompts import PromptBuilder
    from turnrl.search import SearchConfig, run_search

    if temperature <= 0:
        _fail(f"--temperature must be > 0: greedy proposals are all the same action (got {temperature})")
    try:
        config = SearchConfig(simulations=simulations, branching=branching, exploration=exploration, alpha=alpha,
                              max_turns=max_turns, context=context)
        builder = PromptBuilder(style=prompt_style)
    except ValueError as err:
        _fail(str(err))
    from turnrl.agents.models import load_model
    from turnrl.agents.policy import Policy

    split_tasks = list(instance.tasks(split))
    chosen = [split_tasks[i % len(split_tasks)] for i in range(tasks)]
    model_obj, tokenizer = load_model(model)
    policy = Policy(model_obj, tokenizer, temperature=temperature, max_new_tokens=max_new_tokens)
    summary = run_search(policy, env, chosen, config, output_dir, env_kwargs=kwargs, threshold=threshold, seed=seed,
                         batch_size=batch_size, builder=builder)
    print(json.dumps({"model": model, "split": split, **summary}, default=str))


@app.command()
def dpo(
    pairs: Path = typer.Option(..., help="the pairs/ folder of `turnrl search`"),
    model: str = typer.Option("tiny", help="the policy that searched (hub id, path, alias, or a run's final/)"),
    output_dir: Path = typer.Option(Path("runs/dpo"), help="the trained model goes to OUTPUT_DIR/final"),
    beta: float = typer.Option(0.1, help="DPO β"),
    reference: str = typer.Option("recompute", help="recompute (TRL: adapter off) or behaviour (the search's "
                                                     "logged log-probs, the paper's; needs temperature 1)"),
    epochs: float = typer.Option(1.0),
    learning_rate: float = typer.Option(5e-5),
    batch_size: int = typer.Option(8),
    lora: bool = typer.Option(True, help="train a LoRA adapter (the reference is the adapter switched off)"),
    seed: int = typer.Option(0),
) -> None:
    """Step-level DPO on search preference pairs (TRL DPOTrainer)."""
    from turnrl.algorithms.dpo import REFERENCES, run_dpo

    if reference not in REFERENCES:
        _fail(f"--reference must be one of: {', '.join(REFERENCES)} (got {reference!r})")
    try:
        summary = run_dpo(model=model, pairs=pairs, output_dir=output_dir, lora=lora, beta=beta, reference=reference,
                          epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    print(json.dumps(summary, default=str))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def agentq(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", help="YAML of AgentQConfig keys (configs/*_agentq.yaml)"),
) -> None:
    """The Agent Q loop: search -> step DPO (or policy gradient on the search episodes) -> evaluation."""
    from turnrl.algorithms.config import ConfigError
    from turnrl.algorithms.dpo import load_agentq_config, parse_agentq_overrides, run_agentq

    try:
        cfg = load_agentq_config(config, parse_agentq_overrides(list(ctx.args)))
    except (FileNotFoundError, ValueError, TypeError) as err:
        _fail(str(err))
    _load_env_module(cfg.env_module)
    _check_model(cfg.model)
    _check_env(cfg.env, cfg.split, cfg.env_kwargs)
    _check_env(cfg.env, cfg.eval_split, cfg.env_kwargs)
    try:
        summary = run_agentq(cfg)
    except (FileNotFoundError, ValueError, ConfigError) as err:
        _fail(str(err))
    print(json.dumps(summary, default=str))


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a run folder (the output_dir of `turnrl train`), finished or not"),
    output: Path | None = typer.Option(None, help="the HTML file to write (default RUN_DIR/report.html)"),
    max_episodes: int = typer.Option(200, help="episodes in the viewer (the first ones: evaluations, then samples)"),
) -> None:
    """Write one self-contained HTML report of a run: curves, config, evaluations, episodes, search trees."""
    from turnrl.report import ReportError, write_report

    if max_episodes < 1:
        _fail(f"--max-episodes must be at least 1 (got {max_episodes})")
    try:
        path = write_report(run_dir, output, max_episodes=max_episodes)
    except ReportError as err:
        _fail(str(err))
    console.print(f"report: {escape(str(path))}")


@app.command()
def play(
    env: str = typer.Argument(..., help="environment name (see `turnrl envs`)"),
    env_module: str | None = EnvModule,
    env_kwargs: str | None = typer.Option(None, help="JSON object of environment keyword arguments"),
    split: str = typer.Option("test", help="task split"),
    task_index: int = typer.Option(0, help="which task of the split (0 = the first)"),
    seed: int = typer.Option(0),
    max_turns: int = typer.Option(50, help="the episode stops after this many actions"),
    output: Path | None = typer.Option(None, help="trajectory JSONL the episode is appended to "
                                                  "(default play_ENV.jsonl in the current folder)"),
) -> None:
    """Play an environment yourself: pick a numbered action or type one; `hint` asks the expert, `quit` ends."""
    _load_env_module(env_module)
    kwargs = _parse_json(env_kwargs, "--env-kwargs")
    instance = _check_env(env, split, kwargs)
    tasks = list(instance.tasks(split))
    if not 0 <= task_index < len(tasks):
        _fail(f"--task-index must be in 0..{len(tasks) - 1} for split {split!r} (got {task_index})")
    if max_turns < 1:
        _fail(f"--max-turns must be at least 1 (got {max_turns})")
    from turnrl.play import default_output, play_episode, save_episode

    episode = play_episode(instance, env, tasks[task_index], seed=seed, max_turns=max_turns, console=console)
    path = save_episode(episode, output or default_output(env))
    console.print(f"episode saved to {escape(str(path))}")


@app.command()
def serve(
    env: str = typer.Option(..., help="environment name (any registered one, a user's with --env-module)"),
    env_module: str | None = EnvModule,
    env_kwargs: str | None = typer.Option(None, help="JSON object of environment keyword arguments"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 for every interface)"),
    port: int = typer.Option(8000),
    max_sessions: int = typer.Option(64, help="concurrent sessions (one environment each); more are refused"),
    idle_timeout: float = typer.Option(600.0, help="seconds without a message after which a session is closed "
                                                   "(0: never)"),
) -> None:
    """Serve an environment as an OpenEnv server (WebSocket /ws sessions), for TRL, SkyRL and other trainers."""
    _load_env_module(env_module)
    kwargs = _parse_json(env_kwargs, "--env-kwargs")
    _check_env(env, env_kwargs=kwargs)
    try:
        from turnrl.environments.serve import serve as run_server
    except ModuleNotFoundError as err:
        _fail(f"turnrl serve needs the openenv package ({err}): pip install 'turnrl[openenv]'")
    try:
        run_server(env, kwargs, host=host, port=port, max_sessions=max_sessions,
                   idle_timeout=idle_timeout if idle_timeout > 0 else None)
    except ValueError as err:
        _fail(str(err))


def main() -> None:
    ended_well = False
    try:
        app()
        ended_well = True
    except SystemExit as done:
        ended_well = done.code in (None, 0)
        raise
    finally:
        _close_process_group(ended_well)


def _close_process_group(ended_well: bool) -> None:
    """Under several processes, wait for the others and take the process group down before the interpreter does:
    gloo's worker threads outliving the interpreter abort the process at exit (SIGABRT, "terminate called without an
    active exception"), seen in CI on a run that had finished and written everything."""
    dist = sys.modules.get("torch.distributed")   # not imported: no process group, and no torch import at exit
    if dist is not None and dist.is_available() and dist.is_initialized():
        if ended_well:   # after an error the others may never come to the barrier
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

"""Batched multi-turn rollouts with the `tiny` model: log-prob agreement between generation and
recomputation, token bookkeeping by segments, scripted and expert policies, chat-template checks,
seeding and sampling settings."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from turnrl.agents.doctor import TOLERANCE, logprob_agreement, template_check
from turnrl.agents.models import load_model
from turnrl.agents.policy import ExpertPolicy, Policy
from turnrl.agents.prompts import ChatTemplateError, ChatTokens, HistoryEntry, PromptBuilder, parse_context
from turnrl.agents.rollout import EpisodeSpec, expert_choice, random_choice, rollout, scripted_rollout
from turnrl.algorithms.sft import expert_demonstrations
from turnrl.environments import Environment, StepResult, make_env
from turnrl.episode import episode_samples

pytestmark = pytest.mark.usefixtures("one_thread")

CONTEXTS = ("full", "window:2")

# Lights and guess-number of several sizes in one batch: prompts of different lengths, and (with the
# nudged model below) episodes that end at different turns, so rows leave the batch while others go on.
MIXED_ENVS = [
    ("lights", {"n_lamps": 1}), ("lights", {}), ("lights", {"n_lamps": 9}), ("guess-number", {"high": 1}),
    ("guess-number", {"high": 2}), ("guess-number", {"low": 1, "high": 40}), ("lights", {"n_lamps": 1}),
    ("guess-number", {"high": 1}),
]


@pytest.fixture(scope="module")
def tiny(one_thread):
    return load_model("tiny")


@pytest.fixture(scope="module")
def nudged(tiny, train_on_turn_ends):
    """A copy of `tiny` trained for a few dozen steps on the ends of expert turns of one-lamp lights and
    one-number guessing, so that it often writes `<action>…</action>` and some episodes are won early."""
    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    demos = (expert_demonstrations(tokenizer, "lights", list(range(8)), env_kwargs={"n_lamps": 1}, context="window:0")
             + expert_demonstrations(tokenizer, "guess-number", list(range(8)), env_kwargs={"high": 1},
                                     context="window:0"))
    return train_on_turn_ends(model, tokenizer, demos), tokenizer


def mixed_rollout(policy, context, seed=0, max_turns=3):
    envs = [make_env(name, **kwargs) for name, kwargs in MIXED_ENVS]
    specs = [EpisodeSpec(task, seed, group) for group, task in enumerate([0, 1, 2, 3, 4, 5, 6, 7])]
    generator = torch.Generator().manual_seed(seed)
    return rollout(policy, envs, specs, env_name="mixed", context=context, max_turns=max_turns,
                   generator=generator)


def replay_env(index, episode):
    """A fresh environment of `MIXED_ENVS[index]` at the start of `episode`."""
    name, kwargs = MIXED_ENVS[index]
    env = make_env(name, **kwargs)
    env.reset(task=episode.task, seed=episode.seed)
    return env


# --------------------------------------------------------------------------------- log-prob agreement


@pytest.mark.parametrize("env_name", ["lights", "guess-number"])
def test_doctor_logprob_agreement(tiny, env_name):
    policy = Policy(*tiny, max_new_tokens=12)
    diffs = logprob_agreement(policy, env_name, contexts=CONTEXTS, episodes=4, max_turns=3)
    assert set(diffs) == set(CONTEXTS)
    assert max(diffs.values()) <= TOLERANCE


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9)])
def test_generation_logprobs_match_recomputation(nudged, context, temperature, top_p):
    policy = Policy(*nudged, temperature=temperature, top_p=top_p, max_new_tokens=10)
    episodes = mixed_rollout(policy, context)
    turns = [len(e.turns) for e in episodes]
    assert len(set(turns)) > 1, f"expected episodes of mixed lengths, got {turns}"
    first_prompts = [e.turns[0].span[0] if context == "full" else len(e.turns[0].prompt_ids) for e in episodes]
    assert len(set(first_prompts)) > 1, "expected prompts of different lengths in one batch"
    samples = [s for i, e in enumerate(episodes) for s in episode_samples(e, [0.0] * len(e.turns), i)]
    assert len(samples) == (len(episodes) if context == "full" else sum(turns))
    recomputed = policy.logprobs([s.token_ids for s in samples], batch_size=5)   # batches mix lengths too
    worst, checked = 0.0, 0
    for sample, scores in zip(samples, recomputed):
        assert len(scores) == len(sample.token_ids) - 1
        for i, on in enumerate(sample.loss_mask):
            if on:
                assert i > 0
                worst = max(worst, abs(scores[i - 1] - sample.behaviour_logprobs[i]))
                checked += 1
    assert checked == sum(len(t.completion_ids) for e in episodes for t in e.turns)
    assert worst <= TOLERANCE


# ------------------------------------------------------------------------------- token bookkeeping


def test_full_context_is_built_segment_by_segment(nudged):
    _, tokenizer = nudged
    policy = Policy(*nudged, max_new_tokens=10)
    episodes = mixed_rollout(policy, "full")
    chat, builder = ChatTokens(tokenizer), PromptBuilder()
    for index, episode in enumerate(episodes):
        env = replay_env(index, episode)
        messages = builder.first_message(env, episode.turns[0].observation)
        first_text = chat.render(messages, add_generation_prompt=True)
        expected = chat.prompt_ids(messages)
        for n, turn in enumerate(episode.turns):
            start, end = turn.span
            assert start == len(expected)                       # the turn's tokens follow the prefix so far
            assert episode.token_ids[start:end] == turn.completion_ids
            assert len(turn.logprobs) == len(turn.completion_ids)
            ended_with_eos = turn.completion_ids[-1] == tokenizer.eos_token_id
            text_ids = turn.completion_ids[:-1] if ended_with_eos else turn.completion_ids
            assert tokenizer.decode(text_ids, skip_special_tokens=False) == turn.response
            expected = expected + turn.completion_ids
            if n == len(episode.turns) - 1:
                break
            if turn.action is not None:
                env.step(turn.action)
            next_message = builder.observation_message(env, turn.next_observation)
            expected = expected + chat.continuation_ids(messages, turn.response, ended_with_eos, next_message)
            messages = messages + [{"role": "assistant", "content": turn.response}, next_message]
            assert episode.turns[n + 1].observation == turn.next_observation
        assert episode.token_ids == expected                    # nothing after the last turn's tokens
        text = tokenizer.decode(episode.token_ids, skip_special_tokens=False)
        for turn in episode.turns:
            assert turn.observation in text and turn.response in text
        assert text.startswith(first_text)


def test_window_context_prompts_are_fresh_chat_prompts(nudged):
    _, tokenizer = nudged
    policy = Policy(*nudged, max_new_tokens=10)
    episodes = mixed_rollout(policy, "window:2")
    chat, builder = ChatTokens(tokenizer), PromptBuilder()
    system = [{"role": "system", "content": "s"}]
    generation_prompt = chat.render(system, True)[len(chat.render(system, False)):]
    suffix = chat.encode(generation_prompt)
    assert suffix
    for index, episode in enumerate(episodes):
        assert episode.token_ids is None
        env = replay_env(index, episode)
        task_observation = episode.turns[0].observation
        history = []
        for turn in episode.turns:
            assert turn.span is None
            assert turn.prompt_ids[-len(suffix):] == suffix
            messages = builder.window_messages(env, task_observation, history, turn.observation, 2)
            assert turn.prompt_ids == chat.prompt_ids(messages)
            prompt_text = tokenizer.decode(turn.prompt_ids, skip_special_tokens=False)
            assert turn.observation in prompt_text
            for entry in history[-2:]:
                assert entry.observation in prompt_text     # only the last k steps are shown
            if turn.action is not None:
                env.step(turn.action)
            history.append(HistoryEntry(turn.observation, turn.action or "(no valid action)"))


def test_stop_reasons_and_context_limit(tiny, nudged):
    episodes = mixed_rollout(Policy(*nudged, max_new_tokens=10), "full", max_turns=3)
    for episode in episodes:
        assert episode.stop_reason in ("done", "max_turns")
        assert (episode.stop_reason == "done") == episode.turns[-1].done
        assert len(episode.turns) <= 3
    envs = [make_env("lights") for _ in range(2)]
    specs = [EpisodeSpec(0, 0, 0), EpisodeSpec(1, 0, 1)]
    policy = Policy(*tiny, max_new_tokens=4)    # the untrained model writes no action: no episode is won
    short = rollout(policy, envs, specs, env_name="lights", max_turns=5, max_context_tokens=10)
    assert all(e.stop_reason == "context_full" and len(e.turns) == 1 for e in short)


def test_rollout_needs_one_env_per_spec(tiny):
    with pytest.raises(ValueError, match="1 environments for 2 episodes"):
        rollout(Policy(*tiny), [make_env("lights")], [EpisodeSpec(0, 0, 0)] * 2, env_name="lights")


def test_invalid_responses_get_the_penalty_and_a_format_observation(tiny):
    policy = Policy(*tiny, max_new_tokens=6)      # the untrained model almost never writes an action
    envs = [make_env("lights") for _ in range(3)]
    episodes = rollout(policy, envs, [EpisodeSpec(t, 0, t) for t in range(3)], env_name="lights",
                       max_turns=2, invalid_penalty=0.25, generator=torch.Generator().manual_seed(0))
    invalid = [t for e in episodes for t in e.turns if t.action is None]
    assert invalid
    for turn in invalid:
        assert turn.invalid and turn.penalty == 0.25 and turn.reward == 0.0
        assert turn.next_observation.startswith("Invalid response") and "<action>" in turn.next_observation


# ------------------------------------------------------------------------- expert and scripted play


@pytest.mark.parametrize("env_name", ["lights", "guess-number"])
@pytest.mark.parametrize("context", CONTEXTS)
def test_expert_policy_through_rollout_succeeds(tiny, env_name, context):
    _, tokenizer = tiny
    tasks = make_env(env_name).tasks("test")[:4]
    envs = [make_env(env_name) for _ in tasks]
    specs = [EpisodeSpec(task, 0, g) for g, task in enumerate(tasks)]
    episodes = rollout(ExpertPolicy(tokenizer), envs, specs, env_name=env_name, context=context, max_turns=10)
    assert all(e.success and e.stop_reason == "done" for e in episodes)
    for episode in episodes:
        for turn in episode.turns:
            assert turn.response == f"<action>{turn.action}</action>" and not turn.invalid
            assert turn.completion_ids[-1] == tokenizer.eos_token_id
            assert turn.logprobs == [0.0] * len(turn.completion_ids)
        if context == "full":
            spans = [episode.token_ids[slice(*t.span)] for t in episode.turns]
            assert spans == [t.completion_ids for t in episode.turns]


def test_expert_policy_without_an_expert_raises(tiny):
    class NoExpert(Environment):
        def reset(self, task=None, seed=None):
            return "nothing to do"

        def step(self, action):
            return StepResult("still nothing", 0.0, False, {"invalid": False})

        def tasks(self, split="train"):
            return [0]

    with pytest.raises(ValueError, match="NoExpert has no expert action"):
        rollout(ExpertPolicy(tiny[1]), [NoExpert()], [EpisodeSpec(0, 0, 0)], env_name="none")
    with pytest.raises(ValueError, match="gave no action"):
        scripted_rollout([NoExpert()], [EpisodeSpec(0, 0, 0)], expert_choice, env_name="none")
    with pytest.raises(ValueError, match="admissible actions"):
        scripted_rollout([NoExpert()], [EpisodeSpec(0, 0, 0)], random_choice(0), env_name="none")


@pytest.mark.parametrize("env_name", ["lights", "guess-number"])
def test_scripted_expert_wins_every_task(env_name):
    tasks = make_env(env_name).tasks("test")[:20]
    envs = [make_env(env_name) for _ in tasks]
    episodes = scripted_rollout(envs, [EpisodeSpec(t, 0, g) for g, t in enumerate(tasks)], expert_choice,
                                env_name=env_name)
    assert all(e.success and e.stop_reason == "done" and e.context == "scripted" for e in episodes)
    assert all(t.completion_ids == [] and t.action == t.response for e in episodes for t in e.turns)
    if env_name == "guess-number":
        assert max(len(e.turns) for e in episodes) <= 5      # binary search over 1..16


@pytest.mark.parametrize("env_name", ["lights", "guess-number"])
def test_scripted_random_is_seeded_and_admissible(env_name):
    def play(seed):
        envs = [make_env(env_name) for _ in range(6)]
        return scripted_rollout(envs, [EpisodeSpec(t, 0, t) for t in range(6)], random_choice(seed),
                                env_name=env_name, max_turns=4)

    first, again, other = play(1), play(1), play(2)
    actions = [[t.action for t in e.turns] for e in first]
    assert actions == [[t.action for t in e.turns] for e in again]
    assert actions != [[t.action for t in e.turns] for e in other]
    assert all(len(e.turns) <= 4 and e.stop_reason in ("done", "max_turns") for e in first)
    prefix = "toggle " if env_name == "lights" else "guess "
    assert all(a.startswith(prefix) for acts in actions for a in acts)


# ---------------------------------------------------------------------------------- chat templates

ROLE = "<|im_start|>{{ m['role'] }}\n"
LAST_TWO_ONLY = ("{% for m in messages[-2:] %}" + ROLE + "{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LAST_THREE_ONLY = LAST_TWO_ONLY.replace("[-2:]", "[-3:]")   # breaks only once a user message follows
DROPS_REASONING = ("{% for m in messages %}" + ROLE + "{% if m['role'] == 'assistant' %}"
                   "{{ m['content'].split('</think>')[-1] }}{% else %}{{ m['content'] }}{% endif %}"
                   "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def with_template(tokenizer, template):
    changed = copy.deepcopy(tokenizer)
    changed.chat_template = template
    return changed


def test_tiny_template_is_prefix_preserving(tiny):
    assert template_check(tiny[1], "lights")[0]
    assert template_check(tiny[1], "guess-number")[0]


@pytest.mark.parametrize(("template", "message"), [(LAST_TWO_ONLY, "chat template"),
                                                    (LAST_THREE_ONLY, "not prefix-preserving"),
                                                    (DROPS_REASONING, "rewrites the assistant")])
def test_templates_that_cannot_grow_turn_by_turn(tiny, template, message):
    tokenizer = with_template(tiny[1], template)
    chat, builder = ChatTokens(tokenizer), PromptBuilder()
    env = make_env("lights")
    messages = builder.first_message(env, env.reset(task=0, seed=0))
    next_message = builder.observation_message(env, "Lamps: 1 on.")
    with pytest.raises(ChatTemplateError, match=message) as err:
        chat.continuation_ids(messages, "<think>off</think><action>toggle 1</action>", True, next_message)
    assert "window:k" in str(err.value)
    ok, detail = template_check(tokenizer, "lights")
    assert not ok and message in detail
    assert tiny[1].chat_template != template        # the module's tokenizer is untouched


def test_full_context_rollout_refuses_a_template_that_is_not_prefix_preserving(tiny):
    tokenizer = with_template(tiny[1], LAST_TWO_ONLY)
    expert = ExpertPolicy(tokenizer)
    tasks = make_env("lights").tasks("train")
    played = scripted_rollout([make_env("lights") for _ in tasks[:10]], [EpisodeSpec(t, 0, 0) for t in tasks[:10]],
                              expert_choice, env_name="lights")
    task = next(e.task for e in played if len(e.turns) > 1)     # a continuation is needed
    envs, specs = [make_env("lights")], [EpisodeSpec(task, 0, 0)]
    with pytest.raises(ChatTemplateError):
        rollout(expert, envs, specs, env_name="lights", context="full")
    assert rollout(expert, envs, specs, env_name="lights", context="window:2")[0].success


def test_no_chat_template(tiny):
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatTokens(with_template(tiny[1], None))


def test_parse_context():
    assert parse_context("full") is None and parse_context("window:3") == 3 and parse_context("window:0") == 0
    for bad in ("window:x", "window", "ful"):
        with pytest.raises(ValueError, match="'full' or 'window:k'"):
            parse_context(bad)


# -------------------------------------------------------------------------- seeding and sampling


@pytest.mark.parametrize("context", CONTEXTS)
def test_same_seed_same_episodes(tiny, context):
    policy = Policy(*tiny, max_new_tokens=8)
    first, again, other = mixed_rollout(policy, context, seed=3, max_turns=2), \
        mixed_rollout(policy, context, seed=3, max_turns=2), mixed_rollout(policy, context, seed=4, max_turns=2)
    assert [e.to_json() for e in first] == [e.to_json() for e in again]
    ids = [[t.completion_ids for t in e.turns] for e in first]
    assert ids != [[t.completion_ids for t in e.turns] for e in other]


def test_greedy_is_deterministic_whatever_top_p(tiny):
    env = make_env("lights")
    prompt = ChatTokens(tiny[1]).prompt_ids(PromptBuilder().first_message(env, env.reset(task=0)))
    prompts = [prompt, prompt[5:], prompt[:40]]
    greedy = Policy(*tiny, temperature=0.0, max_new_tokens=8).generate(prompts)
    narrow = Policy(*tiny, temperature=0.0, top_p=0.3, max_new_tokens=8)
    for _ in range(2):
        again = narrow.generate(prompts, generator=torch.Generator().manual_seed(random.randrange(1000)))
        assert [c.token_ids for c in again] == [c.token_ids for c in greedy]
        assert [c.logprobs for c in again] == [c.logprobs for c in greedy]
    # a nucleus holding only the most likely token samples the greedy tokens, and records the same
    # (untruncated, temperature-1) log-probs
    sampled = Policy(*tiny, temperature=1.0, top_p=1e-6, max_new_tokens=8).generate(
        prompts, generator=torch.Generator().manual_seed(0))
    assert [c.token_ids for c in sampled] == [c.token_ids for c in greedy]
    for s, g in zip(sampled, greedy):
        assert s.logprobs == pytest.approx(g.logprobs, abs=1e-5)


def test_top_p_samples_inside_the_nucleus(tiny):
    model, tokenizer = tiny
    env = make_env("guess-number")
    prompt = ChatTokens(tokenizer).prompt_ids(PromptBuilder().first_message(env, env.reset(task=0)))
    top_p = 0.3
    policy = Policy(model, tokenizer, top_p=top_p, max_new_tokens=1)
    completions = policy.generate([prompt] * 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([prompt])).logits[0, -1].float(), -1)
    for completion in completions:
        token = completion.token_ids[0]
        assert completion.logprobs[0] == pytest.approx(float(probs[token].log()), abs=1e-4)
        assert float(probs[probs > probs[token]].sum()) < top_p   # mass strictly above it is under p
    assert len({c.token_ids[0] for c in completions}) > 1          # still a sample, not the argmax


def test_policy_rejects_bad_settings(tiny):
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        Policy(*tiny, temperature=-1)
    for top_p in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
            Policy(*tiny, top_p=top_p)
    assert Policy(*tiny).generate([]) == []


class _Quiz(Environment):
    """An environment that reads its own tags (`parses_responses`): `<ask>` a question, `<answer>` ends."""

    parses_responses = True
    stop_strings = ("</ask>", "</answer>")
    format_hint = "Reply with <ask>question</ask> or <answer>final answer</answer>."
    tool_schemas = ({"type": "function", "function": {"name": "lookup", "description": "Look a word up.",
                                                      "parameters": {"type": "object", "properties": {}}}},)

    def tasks(self, split="train"):
        return [0, 1]

    def reset(self, task=None, seed=None):
        self.asked, self.responses = False, []
        return "What is the secret word?"

    def step(self, action):
        self.responses.append(action)
        if "<answer>" in action:
            ok = "<answer>owl</answer>" in action
            return StepResult("Done.", float(ok), True, {"success": ok, "invalid": False})
        if "<ask>" in action:
            self.asked = True
            return StepResult("The secret word is owl.", 0.0, False, {"success": False, "invalid": False})
        return StepResult("Use <ask> or <answer>.", 0.0, False, {"success": False, "invalid": True})

    def expert_action(self):
        return "<answer>owl</answer>" if self.asked else "<ask>the word</ask>"

    def admissible_actions(self):
        return ["<answer>owl</answer>", "<ask>the word</ask>"]


@pytest.mark.parametrize("context", CONTEXTS)
def test_an_env_that_parses_responses_gets_them_whole(tiny, context):
    policy = Policy(*tiny, max_new_tokens=6, temperature=1.0)
    envs = [_Quiz(), _Quiz()]
    episodes = rollout(policy, envs, [EpisodeSpec(0, 0, 0), EpisodeSpec(1, 0, 1)], env_name="quiz",
                       context=context, max_turns=2, invalid_penalty=0.25, generator=torch.Generator().manual_seed(0))
    for env, episode in zip(envs, episodes):
        # Whatever the random model wrote reached the environment verbatim; its flag sets the penalty.
        assert env.responses == [turn.response for turn in episode.turns] == [turn.action for turn in episode.turns]
        for turn in episode.turns:
            assert turn.penalty == (0.25 if turn.info["invalid"] else 0.0)

    expert = ExpertPolicy(tiny[1])
    [episode] = rollout(expert, [_Quiz()], [EpisodeSpec(0, 0, 0)], env_name="quiz", context=context, max_turns=3)
    assert [turn.response for turn in episode.turns] == ["<ask>the word</ask>", "<answer>owl</answer>"]
    assert episode.success and episode.total_penalty == 0.0


def test_prompts_use_the_envs_format_and_tools(tiny):
    tokenizer = tiny[1]
    chat, builder = ChatTokens(tokenizer), PromptBuilder()
    env = _Quiz()
    observation = env.reset(task=0, seed=0)
    messages = builder.first_message(env, observation)
    assert _Quiz.format_hint in messages[1]["content"] and "<action>" not in messages[0]["content"]
    assert "owl" not in messages[1]["content"]     # candidate responses are not shown: they hold answers
    # The tiny ChatML template ignores `tools=`, so the tools are written into the system message.
    assert not chat.renders_tools
    text = tokenizer.decode(chat.prompt_ids(messages, tools=env.tool_schemas))
    assert '"name": "lookup"' in text and text.index("lookup") < text.index(observation)
    window = builder.window_messages(env, observation, [HistoryEntry(observation, "<ask>x</ask>")], "Next.", 1)
    assert _Quiz.format_hint in window[1]["content"]


def test_a_template_that_renders_tools_gets_them(tiny):
    tokenizer = copy.deepcopy(tiny[1])
    tokenizer.chat_template = (
        "{% if tools %}<tools>{% for t in tools %}{{ t['function']['name'] }};{% endfor %}</tools>{% endif %}"
        + tokenizer.chat_template
    )
    chat = ChatTokens(tokenizer)
    assert chat.renders_tools
    text = chat.render([{"role": "user", "content": "hi"}], add_generation_prompt=True, tools=_Quiz.tool_schemas)
    assert text.startswith("<tools>lookup;</tools>") and "Available tools" not in text


def test_policy_stops_at_the_envs_stop_strings(tiny):
    policy = Policy(*tiny, max_new_tokens=4)
    assert policy._stop_strings_for(_Quiz()) == ("</ask>", "</answer>")
    assert policy._stop_strings_for(make_env("lights")) == ("</action>",)


def test_shared_prefill_of_identical_prompts_changes_nothing():
    """Identical prompts prefilled once (a search node's K proposals) sample what separately prefilled rows
    sample: the same tokens greedily, the same log-probs to float rounding."""
    from turnrl.agents.models import load_model
    from turnrl.agents.policy import Policy

    model, tokenizer = load_model("tiny")
    policy = Policy(model, tokenizer, temperature=0.0, max_new_tokens=6)
    a, b = tokenizer("a lamp is off")["input_ids"], tokenizer("two lamps are on, one is off")["input_ids"]
    prompts = [a, b, a, a, b]
    plain = policy.generate(prompts)
    shared = policy.generate(prompts, share_prefill=True)
    assert [c.token_ids for c in shared] == [c.token_ids for c in plain]
    for x, y in zip(shared, plain):
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5)
    sampled = Policy(model, tokenizer, temperature=1.0, max_new_tokens=6)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    assert [c.token_ids for c in sampled.generate(prompts, generator=gens(), share_prefill=True)] == \
        [c.token_ids for c in sampled.generate(prompts, generator=gens())]


def test_behaviour_cloning_checkpoints_activations_only_for_long_demonstrations():
    from datasets import Dataset

    from turnrl.algorithms.sft import needs_checkpointing

    def demos(*lengths):
        return Dataset.from_dict({"input_ids": [[1] * n for n in lengths], "labels": [[1] * n for n in lengths]})

    assert not needs_checkpointing(demos(436, 727), 4)            # search-QA: the quickstart's warm start
    assert not needs_checkpointing(demos(825, 1114), 4)           # ALFWorld: trained without it
    assert needs_checkpointing(demos(1308, 2343), 4)              # WebShop: ran out of 24 GB without it
    assert not needs_checkpointing(demos(1308, 2343), 1)

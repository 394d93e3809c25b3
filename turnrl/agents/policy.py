"""Policy: batched sampling with per-token log-probs, and log-prob scoring of token sequences.

Generation is a plain KV-cached sampling loop rather than `model.generate`, so the numbers it records
are exactly the ones the trainer recomputes: the behaviour log-prob of a token is
log softmax(logits / temperature) at that token, over the full vocabulary. Top-p only narrows where
the sample is drawn from; its truncation is not folded into the recorded log-prob (the trainer's
ratio uses the same untruncated distribution, so the two stay comparable).

Prompts are left-padded for generation and right-padded for scoring; both pass explicit position ids
(counting real tokens only) so a token sees the same positions either way.

Cross-turn cache (`TurnCache`): in `full` context a conversation only grows, so the keys and values of
everything a row has already seen can be kept between turns and only the new segment (the last
generated token, the template glue and the next observation) prefilled. Rows keep their own attention
mask over the cache's columns: padding of a new segment and tokens sampled for a row after it finished
are masked out, and position ids count real tokens only, so every token sees exactly the prefix and
positions it would see without the cache.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field

import torch


@dataclass
class Completion:
    token_ids: list[int]      # generated ids, end-of-turn token included when generated
    logprobs: list[float]     # behaviour log-prob of each generated id
    text: str                 # decoded text without the end-of-turn token
    ended_with_eos: bool


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (padding gets position 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype that log-probs, values and σ gradients are computed in for a model of `dtype`: float32, or float64
    for a float64 model (as the invariant tests run, so that it stays float64 end to end)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """`x` in `compute_dtype(x.dtype)` (`x` itself when it already is)."""
    return x.to(compute_dtype(x.dtype))


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   temperature: float = 1.0, return_hidden: bool = False):
    """Log-prob of each token given its prefix: result[:, i] scores input_ids[:, i + 1]. Shape [B, L-1].
    With `return_hidden`, also the last layer's hidden states [B, L, H] (for a value head on the same forward)."""
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions_from_mask(attention_mask),
        use_cache=False, output_hidden_states=return_hidden,
    )
    logits = at_least_float32(out.logits[:, :-1])
    if temperature != 1.0:
        logits = logits / temperature
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (logprobs, out.hidden_states[-1]) if return_hidden else logprobs


def keyed_generator(key: str, device) -> torch.Generator:
    """A sampling generator seeded by a hash of `key` alone (an episode's or a search tree's identity), so what it
    samples does not depend on which other rows share the batch."""
    return torch.Generator(device=device).manual_seed(int(hashlib.sha256(key.encode()).hexdigest()[:15], 16))


def _cache_argument(model) -> str:
    """The KV-cache keyword of this model's forward: `cache` in transformers >= 5.24, else `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class CacheUnsupportedError(ValueError):
    """The model's KV cache cannot be kept and extended between turns."""


@dataclass
class TurnCache:
    """The KV cache of a batch of live conversations, kept between turns (see the module docstring).

    Row r of the cache holds the keys and values of `ids[r]` (the first tokens of that row's conversation);
    `mask` has one column per cache column, 1 where the column is a real token of the row. The rollout
    drops the rows of finished episodes with `select` before the next turn.
    """

    past: object = None                              # the model's cache object (None before the first turn)
    mask: torch.Tensor | None = None                 # [rows, cache columns]
    ids: list[list[int]] = field(default_factory=list)

    def select(self, rows: list[int]) -> None:
        """Keep only these rows, in this order."""
        if self.past is None or rows == list(range(len(self.ids))):
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.past.batch_select_indices(index)
        self.mask = self.mask[index]
        self.ids = [self.ids[r] for r in rows]
        self._drop_empty_columns()

    def _drop_empty_columns(self) -> None:
        """Columns no remaining row attends to (padding, tokens of finished rows) cost memory and time."""
        keep = self.mask.any(0)
        if bool(keep.all()):
            return
        columns = keep.nonzero().squeeze(-1)
        for layer in self.past.layers:
            layer.keys = layer.keys[:, :, columns]
            layer.values = layer.values[:, :, columns]
        self.mask = self.mask[:, columns]


def check_extendable_cache(past) -> None:
    """Refuse caches that cannot be kept across turns (sliding windows, recurrent or quantized states)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    layers = getattr(past, "layers", None)
    if type(past) is not DynamicCache or not layers or any(type(layer) is not DynamicLayer for layer in layers):
        kinds = sorted({type(layer).__name__ for layer in layers or []}) or [type(past).__name__]
        raise CacheUnsupportedError(
            f"the cross-turn KV cache needs a plain DynamicCache of full-attention layers; this model's cache is "
            f"{type(past).__name__} ({', '.join(kinds)}). Set cross_turn_cache: false (turnrl train) or pass "
            "--no-cross-turn-cache (turnrl eval) to prefill the whole conversation every turn"
        )


def probe_cross_turn_cache(model) -> None:
    """Check with a two-token forward that `model`'s KV cache can be kept across turns."""
    device = next(model.parameters()).device
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    check_extendable_cache(getattr(out, "cache", None) or out.past_key_values)


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def pad_left(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


class Policy:
    """A causal LM and its tokenizer, used as an agent's policy.

    `stop_strings`: generation for a row also ends once its decoded text contains one of these
    (default "</action>", which ends a turn as soon as the action is written).
    """

    def __init__(self, model, tokenizer, *, temperature: float = 1.0, top_p: float = 1.0,
                 max_new_tokens: int = 64, stop_strings: tuple[str, ...] = ("</action>",),
                 device: torch.device | str | None = None):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.model = model
        self.tokenizer = tokenizer
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.stop_strings = tuple(stop_strings)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        return {i for i in ids if i is not None}

    @property
    def logprob_temperature(self) -> float:
        """The temperature the recorded log-probs use (greedy decoding records plain log-probs)."""
        return self.temperature if self.temperature > 0 else 1.0

    def _sample(self, logits: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample one token per row. `generator` is one torch.Generator for the batch, or a list with one per row
        (then a row's tokens do not depend on which other rows share its batch)."""
        logprobs = torch.log_softmax(logits / self.logprob_temperature, dim=-1)
        if self.temperature == 0:
            tokens = logprobs.argmax(-1)
        else:
            probs = logprobs.exp()
            if self.top_p < 1.0:
                sorted_probs, order = probs.sort(dim=-1, descending=True)
                outside = sorted_probs.cumsum(-1) - sorted_probs > self.top_p   # keep the token that crosses p
                sorted_probs = sorted_probs.masked_fill(outside, 0.0)
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
            if isinstance(generator, (list, tuple)):
                tokens = torch.cat([torch.multinomial(probs[row: row + 1], 1, generator=g).view(1)
                                    for row, g in enumerate(generator)])
            else:
                tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], *, generator=None, envs: list | None = None,
                 cache: TurnCache | None = None, share_prefill: bool = False) -> list[Completion]:
        """Sample one completion for each prompt (token ids), all in one batch; `generator` is one
        torch.Generator or one per prompt. `envs` (one per prompt,
        optional) supply per-row `stop_strings`; they also let a scripted policy such as `ExpertPolicy`
        stand in for a model. `cache` (optional, for conversations that only grow): row r of the cache
        holds a prefix of prompt r, only the rest is prefilled, and the cache is left holding each
        conversation with its completion for the next turn. `share_prefill` (without `cache`): identical prompts
        (a tree search's K proposals from one node) are prefilled once and their KV cache copied to each row;
        every row then samples on its own."""
        if not prompts:
            return []
        batch = len(prompts)
        prefilled = None   # the last-position logits of every row when the prompts were prefilled here
        if share_prefill and cache is None and len({tuple(p) for p in prompts}) < batch:
            ids, mask, positions, past, prefilled = self._prefill_shared(prompts)
        elif cache is not None and cache.past is not None:
            ids, mask, positions = self._extend_cached(prompts, cache)
            past = cache.past
        else:
            ids, mask = pad_left(prompts, self.pad_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            positions = positions_from_mask(mask)
            past = None
        tokens: list[list[int]] = [[] for _ in range(batch)]
        logprobs: list[list[float]] = [[] for _ in range(batch)]
        finished = [False] * batch
        ended_with_eos = [False] * batch
        stops = [self._stop_strings_for(env) for env in envs] if envs else [self.stop_strings] * batch
        cache_kwarg = _cache_argument(self.model)
        step_ids, step_positions = ids, positions
        prefill_columns = mask.shape[1]
        for step in range(self.max_new_tokens):
            if step == 0 and prefilled is not None:
                logits = prefilled
            else:
                out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions,
                                 use_cache=True, **({cache_kwarg: past} if past is not None else {}))
                past = getattr(out, "cache", None) or out.past_key_values
                logits = out.logits[:, -1]
            next_tokens, next_logprobs = self._sample(at_least_float32(logits), generator)
            step_tokens, step_logprobs = next_tokens.tolist(), next_logprobs.tolist()   # one conversion per step
            for row in range(batch):
                if finished[row]:
                    continue
                token = step_tokens[row]
                tokens[row].append(token)
                logprobs[row].append(step_logprobs[row])
                if token in self.eos_ids:
                    finished[row] = ended_with_eos[row] = True
                elif stops[row] and self._hit_stop_string(tokens[row], stops[row]):
                    finished[row] = True
            if all(finished):
                break
            step_ids = next_tokens[:, None]
            step_positions = step_positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=mask.device)], dim=1)
        if cache is not None:
            self._keep_cache(cache, past, mask, prefill_columns, prompts, tokens)
        completions = []
        for row in range(batch):
            text_ids = tokens[row][:-1] if ended_with_eos[row] else tokens[row]
            text = self.tokenizer.decode(text_ids, skip_special_tokens=False)
            completions.append(Completion(tokens[row], logprobs[row], text, ended_with_eos[row]))
        return completions

    def _prefill_shared(self, prompts: list[list[int]]):
        """Prefill each distinct prompt once and give every row the KV cache, mask, positions and last logits of
        its prompt: (ids, mask, positions, cache, logits), one row per prompt."""
        first: dict[tuple, int] = {}
        rows = torch.tensor([first.setdefault(tuple(p), len(first)) for p in prompts], device=self.device)
        ids, mask = pad_left([list(p) for p in first], self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = positions_from_mask(mask)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        past = getattr(out, "cache", None) or out.past_key_values
        past.batch_select_indices(rows)
        return ids[rows], mask[rows], positions[rows], past, out.logits[:, -1][rows]

    def _extend_cached(self, prompts: list[list[int]], cache: TurnCache):
        """The new segments of prompts whose prefixes the cache holds, left-padded into one block after
        the cache's columns; returns (ids, attention mask over cache + block, position ids of the block)."""
        if len(prompts) != len(cache.ids):
            raise ValueError(f"the turn cache holds {len(cache.ids)} rows for {len(prompts)} prompts; "
                             "drop finished rows with TurnCache.select first")
        segments = []
        for row, (prompt, cached) in enumerate(zip(prompts, cache.ids)):
            if len(prompt) <= len(cached) or prompt[: len(cached)] != cached:
                raise ValueError(f"prompt {row} does not extend the conversation the turn cache holds")
            segments.append(prompt[len(cached):])
        block, block_mask = pad_left(segments, self.pad_id)
        mask = torch.cat([cache.mask, block_mask.to(cache.mask.device)], dim=1)
        positions = positions_from_mask(mask)[:, -block.shape[1]:]
        return block.to(self.device), mask, positions

    @staticmethod
    def _keep_cache(cache: TurnCache, past, mask: torch.Tensor, prefill_columns: int, prompts: list[list[int]],
                    tokens: list[list[int]]) -> None:
        """Record what the cache now holds: each prompt and the generated tokens that were fed back in
        (a row's last sampled token is fed only if another row went on); columns fed after a row had
        finished are masked out for that row."""
        check_extendable_cache(past)
        columns = past.get_seq_length()
        fed_steps = columns - prefill_columns
        mask = mask[:, :columns].clone()
        cache.ids = []
        for row, row_tokens in enumerate(tokens):
            fed = min(len(row_tokens), fed_steps)
            mask[row, prefill_columns + fed:] = 0
            cache.ids.append(list(prompts[row]) + row_tokens[:fed])
        cache.past, cache.mask = past, mask

    def _stop_strings_for(self, env) -> tuple[str, ...]:
        """An environment's own `stop_strings` (e.g. `</search>`, `</answer>`) win over the policy's."""
        own = getattr(env, "stop_strings", None)
        return tuple(own) if own is not None else self.stop_strings

    def _hit_stop_string(self, row_tokens: list[int], stop_strings: tuple[str, ...]) -> bool:
        tail = self.tokenizer.decode(row_tokens[-8:], skip_special_tokens=False)
        return any(stop in tail for stop in stop_strings)

    @torch.no_grad()
    def logprobs(self, sequences: list[list[int]], *, batch_size: int = 8) -> list[list[float]]:
        """Recompute per-token log-probs of whole sequences: entry i of a row scores token i + 1."""
        result: list[list[float]] = []
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start: start + batch_size]
            ids, mask = pad_right(chunk, self.pad_id)
            scores = token_logprobs(self.model, ids.to(self.device), mask.to(self.device), self.logprob_temperature)
            result.extend(scores[row, : len(seq) - 1].tolist() for row, seq in enumerate(chunk))
        return result


class ExpertPolicy:
    """Writes the environment's expert action as a model response, `<action>…</action>` (or the expert's
    whole response, for an environment that `parses_responses`) and the end-of-turn token, so
    demonstrations go through the same token bookkeeping as rollouts."""

    def __init__(self, tokenizer, max_new_tokens: int = 64):
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.device = torch.device("cpu")   # where a caller's sampling generator lives; the expert samples nothing

    def generate(self, prompts: list[list[int]], *, generator=None, envs: list | None = None) -> list[Completion]:
        completions = []
        for env in envs:
            action = env.expert_action()
            if action is None:
                raise ValueError(f"{type(env).__name__} has no expert action at this state")
            text = action if getattr(env, "parses_responses", False) else f"<action>{action}</action>"
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            completions.append(Completion(ids, [0.0] * len(ids), text, ended_with_eos=True))
        return completions

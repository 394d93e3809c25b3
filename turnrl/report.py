"""`turnrl report RUN_DIR`: one self-contained HTML page of a training run, finished or still in progress.

The page needs no network when viewed: the CSS and the JavaScript are inline, curves are base64 PNGs made
with matplotlib and search trees are inline SVG. Every piece of text that comes from a run (observations,
responses, config values, tree actions) is HTML-escaped, so an observation holding `<script>` shows as text.

What is read from RUN_DIR (every file is optional; a folder with none of the first four is not a run):

- `config.yaml`: the resolved config, shown as written.
- `metrics.jsonl`: one JSON object per iteration. A panel is drawn for each group of `CURVES` of which
  at least one key has a number, and one for the keys starting with `alp_sigma` (ALP's per-layer σ).
  Lines that do not parse (a run in progress may have a half-written last line) are skipped.
- `eval.json`: the evaluation phases (zero_shot, warm_start, after_rl, in the order the run wrote them),
  shown as a table of success_rate, mean_score, invalid_action_rate, mean_turns and episodes.
- `eval_PHASE.jsonl`: the trajectories of each evaluation, one `Episode.to_json()` per line, ordered by
  the time each file was written (the run's own order).
- `samples/*.jsonl`: sampled training episodes, one `{"iteration": i, "episode": Episode.to_json(),
  "advantages": [one float per turn]}` per line; `episodes/*.jsonl` may hold the same records or bare
  `Episode.to_json()` lines.
- `search/*.json` (one tree, or a list of trees), `search/*.jsonl` and `trees.jsonl` (one tree per line):
  Monte-Carlo search trees. A tree is a node, or an object with the node under "root" (other keys such
  as "task" label it), or an object with a flat list under "nodes" linked by "parent" ids. A node is
  `{"id", "parent", "action", "visits", "value", "q", "chosen": bool, "children": [nodes]}`; every key
  is optional. Trees are drawn with visit counts (node size and label), Q (or value) and the chosen path
  (the nodes marked `chosen`, from the root down) highlighted.

The episode viewer steps through the turns of one episode (Prev/Next buttons or the arrow keys, an
episode selector): the observation, the agent's thinking and action, its raw response, reward, penalty,
advantage where a record has one, what the environment answered, and the turn's tokens with the agent's
tokens (loss mask 1, the ones a policy-gradient update trains on) highlighted. Token ids are decoded with
the run's own tokenizer (`final/` or the latest checkpoint); without one the ids are shown as numbers.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from turnrl.agents.actions import parse_response

# (panel title, metrics keys drawn in it). A panel appears when any of its keys has a number.
CURVES = [
    ("success rate", ["success_rate", "drawn_success_rate", "eval_success_rate"]),
    ("mean return", ["mean_return"]),
    ("KL to the reference", ["kl"]),
    ("clip fraction", ["clip_fraction"]),
    ("importance ratio tail", ["ratio_p1", "ratio_p50", "ratio_p99"]),
    ("|log ratio| p99", ["abs_log_ratio_p99"]),
    ("clip-bias norm ‖C‖ (ST-PPO)", ["clip_bias_norm_mean", "clip_bias_norm_max"]),
]
ALP_SIGMA_PREFIX = "alp_sigma"
EVAL_COLUMNS = ["success_rate", "mean_score", "invalid_action_rate", "mean_turns", "episodes"]
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "eval.json")   # and eval_*.jsonl


class ReportError(ValueError):
    """RUN_DIR cannot be reported (missing, or not a turnrl run folder)."""


@dataclass
class ViewedEpisode:
    """One episode as the viewer shows it: where it came from, the record, and per-turn advantages."""

    source: str                         # "eval zero_shot", "samples iter 3", ...
    episode: dict                       # Episode.to_json()
    advantages: list[float] | None = None


# -- reading a run (tolerant of a run still being written) ------------------------------------------

def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file; blank lines, lines that do not parse (a half-written last
    line of a run in progress) and lines that are not objects are skipped. A missing file gives []."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _read_json(path: Path):
    """A JSON file's value, or None where it is missing or not (yet) complete JSON."""
    try:
        return json.loads(path.read_text(errors="replace"))
    except (OSError, json.JSONDecodeError):
        return None


def check_run_dir(run_dir: Path) -> None:
    """Raise ReportError unless `run_dir` is a folder holding at least one file a turnrl run writes."""
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a folder; give the output_dir of a `turnrl train` run")
    if not any((run_dir / name).is_file() for name in RUN_MARKERS) and not any(run_dir.glob("eval_*.jsonl")):
        raise ReportError(f"{run_dir} is not a turnrl run folder: it holds none of {', '.join(RUN_MARKERS)} "
                          "or eval_*.jsonl (give the output_dir of a `turnrl train` run)")


def _is_episode(record) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("turns"), list)
            and all(isinstance(t, dict) for t in record["turns"]))


def _episode_record(record: dict, source: str) -> ViewedEpisode | None:
    """A bare Episode.to_json() line, or a {"iteration", "episode", "advantages"} record; None otherwise."""
    if _is_episode(record.get("episode")):
        advantages = record.get("advantages")
        if not (isinstance(advantages, list) and all(isinstance(a, (int, float)) for a in advantages)):
            advantages = None
        if "iteration" in record:
            source = f"{source} iter {record['iteration']}"
        return ViewedEpisode(source, record["episode"], advantages)
    if _is_episode(record):
        return ViewedEpisode(source, record)
    return None


def load_episodes(run_dir: Path) -> list[ViewedEpisode]:
    """Evaluation trajectories in the order they were written, then sampled training episodes."""
    episodes = []
    evals = sorted(run_dir.glob("eval_*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name))
    for path in evals:
        phase = path.stem[len("eval_"):]
        episodes += [e for r in read_jsonl(path) if (e := _episode_record(r, f"eval {phase}"))]
    for folder in ("samples", "episodes"):
        for path in sorted((run_dir / folder).glob("*.jsonl")):
            episodes += [e for r in read_jsonl(path) if (e := _episode_record(r, folder))]
    return episodes


def _tree_root(record) -> tuple[dict, str] | None:
    """The root node of one tree record and a label from its other keys; None when it is no tree."""
    if not isinstance(record, dict):
        return None
    label = ", ".join(f"{k} {record[k]}" for k in ("task", "iteration", "step") if k in record)
    if isinstance(record.get("root"), dict):
        return record["root"], label
    if isinstance(record.get("nodes"), list):   # flat nodes linked by parent ids
        nodes = [dict(n) for n in record["nodes"] if isinstance(n, dict)]
        by_id = {n.get("id"): n for n in nodes}
        roots = []
        for node in nodes:
            node["children"] = []
        for node in nodes:
            parent = by_id.get(node.get("parent")) if node.get("parent") is not None else None
            (parent["children"] if parent is not None and parent is not node else roots).append(node)
        return (roots[0], label) if roots else None
    if any(k in record for k in ("children", "visits", "action")):
        return record, label
    return None


def load_trees(run_dir: Path) -> list[tuple[str, dict]]:
    """(label, root node) of every search tree found (see the module docstring for the files)."""
    trees = []
    for path in sorted((run_dir / "search").glob("*.json")):
        value = _read_json(path)
        for i, record in enumerate(value if isinstance(value, list) else [value]):
            if found := _tree_root(record):
                trees.append((f"{path.name} #{i}" + (f" ({found[1]})" if found[1] else ""), found[0]))
    for path in [*sorted((run_dir / "search").glob("*.jsonl")), run_dir / "trees.jsonl"]:
        for i, record in enumerate(read_jsonl(path)):
            if found := _tree_root(record):
                trees.append((f"{path.name} #{i}" + (f" ({found[1]})" if found[1] else ""), found[0]))
    return trees


def find_tokenizer(run_dir: Path):
    """The run's tokenizer (`tokenizers.Tokenizer`) from final/ or the latest checkpoint; None without one."""
    candidates = [run_dir / "final" / "tokenizer.json"]
    candidates += [p / "model" / "tokenizer.json" for p in sorted((run_dir / "checkpoints").glob("iter-*"), reverse=True)]
    for path in candidates:
        if path.is_file():
            from tokenizers import Tokenizer

            try:
                return Tokenizer.from_file(str(path))
            except Exception:  # noqa: BLE001, S112 -- tokenizers raises a bare Exception on a half-written file
                continue   # a checkpoint being written: try the next one
    return None


# -- curves ------------------------------------------------------------------------------------------

def curve_panels(rows: list[dict]) -> list[tuple[str, str]]:
    """(title, base64 PNG) of each curve panel that has data: the `CURVES` groups, then ALP's σ keys."""
    rows = [r for r in rows if isinstance(r.get("iteration"), (int, float))]
    sigma_keys = sorted({k for r in rows for k in r if k.startswith(ALP_SIGMA_PREFIX)})
    groups = CURVES + ([("ALP σ per layer", sigma_keys)] if sigma_keys else [])
    panels = []
    for title, keys in groups:
        series = {k: [_number(r.get(k)) for r in rows] for k in keys}
        series = {k: v for k, v in series.items() if any(not math.isnan(x) for x in v)}
        if series:
            panels.append((title, _plot(title, [r["iteration"] for r in rows], series)))
    return panels


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _plot(title: str, x: list, series: dict[str, list[float]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(4.4, 2.9), dpi=100)
    for key, values in series.items():
        ax.plot(x, values, marker="o", markersize=3, label=key)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iteration", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- HTML pieces -------------------------------------------------------------------------------------

def _e(value) -> str:
    # A raw carriage return would be turned into a newline by the HTML parser; a character reference keeps it.
    return html.escape(str(value), quote=True).replace("\r", "&#13;")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return _e(value)


def eval_table(evals) -> str:
    """The evaluation phases of eval.json as an HTML table (phases in the file's order)."""
    if not isinstance(evals, dict) or not evals:
        return "<p class='note'>No evaluation yet (eval.json is missing or still being written).</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in ["phase", *EVAL_COLUMNS])
    body = "".join(
        f"<tr><td>{_e(phase)}</td>" + "".join(f"<td>{_fmt(row.get(c, ''))}</td>" for c in EVAL_COLUMNS) + "</tr>"
        for phase, row in evals.items() if isinstance(row, dict)
    )
    return f"<table class='eval'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class TokenPieces:
    """The text of each token of a sequence, or the ids as numbers without a tokenizer.

    A character of several bytes may be split over tokens (byte-level BPE), and one token decoded alone
    then shows U+FFFD. So each piece is what the token adds to the decoding of the few tokens before it
    (a UTF-8 character has at most 4 bytes), and a token that leaves a character unfinished shows as
    empty, the character appearing on the token that completes it. Joined, the pieces are the decoded text
    wherever the tokens decode to valid UTF-8."""

    WINDOW = 4

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def __call__(self, ids: list) -> list[str]:
        if self.tokenizer is None or not all(isinstance(i, int) for i in ids):
            return [f"[{i}]" for i in ids]
        pieces = []
        for i in range(len(ids)):
            before = self._decode(ids[max(0, i - self.WINDOW + 1): i]) if i else ""
            after = self._decode(ids[max(0, i - self.WINDOW + 1): i + 1])
            if after.endswith("\ufffd"):   # this token leaves a character unfinished
                pieces.append("")
                continue
            # The common prefix, not `before` itself: an unfinished character at the end of `before` is
            # finished in `after`, and the window may start inside a character (the same garbage in both).
            common = len(os.path.commonprefix([before, after]))
            pieces.append(after[common:])
        return pieces


def turn_tokens(episode: dict, t: int) -> tuple[list, int, list[float]]:
    """The tokens to show for turn t: (ids, index where the agent's tokens start, their log-probs).

    Full context: the stretch of `token_ids` after the previous turn's completion up to the end of this
    one (the observation glue, then the generated tokens at `span`). Window context: the turn's own
    prompt, then its completion. Scripted or human turns have no tokens."""
    turn = episode["turns"][t]
    completion, logprobs = list(turn.get("completion_ids") or []), list(turn.get("logprobs") or [])
    ids, span = episode.get("token_ids"), turn.get("span")
    if ids and span and len(span) == 2:
        previous = episode["turns"][t - 1].get("span") if t else None
        start = previous[1] if previous and len(previous) == 2 else 0
        return list(ids[start: span[1]]), span[0] - start, logprobs
    prompt = list(turn.get("prompt_ids") or [])
    return prompt + completion, len(prompt), logprobs


def _tokens_html(episode: dict, t: int, pieces: TokenPieces, advantage: float | None) -> str:
    ids, agent_start, logprobs = turn_tokens(episode, t)
    if not ids:
        return "<p class='note'>No tokens (a scripted or human turn).</p>"
    sign = "" if advantage is None else (" pos" if advantage > 0 else " neg" if advantage < 0 else " zero")
    spans = []
    for i, (token_id, piece) in enumerate(zip(ids, pieces(ids))):
        text = piece.replace("\n", "↵\n")
        if i >= agent_start:
            k = i - agent_start
            lp = f"log-prob {logprobs[k]:.3f}" if k < len(logprobs) and isinstance(logprobs[k], (int, float)) else ""
            spans.append(f"<span class='tok trained{sign}' title='{_e(f'id {token_id} {lp}')}'>{_e(text)}</span>")
        else:
            spans.append(f"<span class='tok' title='id {_e(token_id)}'>{_e(text)}</span>")
    return f"<pre class='tokens'>\n{''.join(spans)}</pre>"


def _field(name: str, label: str, text) -> str:
    # A newline right after <pre> is dropped by HTML parsers, so one is added to keep the text's own.
    return f"<div class='field {name}'><h4>{_e(label)}</h4><pre>\n{_e('' if text is None else text)}</pre></div>"


def turn_html(view: ViewedEpisode, t: int, pieces: TokenPieces) -> str:
    """One turn of the viewer: observation, thinking, action, response, numbers, answer, tokens."""
    turn = view.episode["turns"][t]
    response = str(turn.get("response") or "")
    think = parse_response(response).think
    advantage = view.advantages[t] if view.advantages and t < len(view.advantages) else None
    info = turn.get("info") or {}
    numbers = [("reward", turn.get("reward")), ("penalty", turn.get("penalty")),
               ("advantage", "n/a" if advantage is None else advantage), ("done", turn.get("done")),
               ("invalid", info.get("invalid", False)), ("info", json.dumps(info, default=str))]
    rows = "".join(f"<tr><th>{_e(k)}</th><td class='{_e(k)}'>{_fmt(v)}</td></tr>" for k, v in numbers)
    return (
        f"<article class='turn' data-turn='{t}' hidden>"
        f"<h3>turn {t + 1} of {len(view.episode['turns'])}</h3>"
        + _field("observation", "observation", turn.get("observation"))
        + _field("thinking", "thinking", think if think is not None else "(none)")
        + _field("action", "action", turn.get("action") if turn.get("action") is not None else "(no valid action)")
        + _field("response", "full response", response)
        + f"<table class='numbers'>{rows}</table>"
        + _field("next-observation", "environment answered", turn.get("next_observation"))
        + "<div class='field'><h4>tokens (highlighted: the agent's tokens, loss mask 1)</h4>"
        + _tokens_html(view.episode, t, pieces, advantage) + "</div></article>"
    )


def episode_label(i: int, view: ViewedEpisode) -> str:
    e = view.episode
    outcome = "success" if e.get("success") else "fail"
    total = e.get("total_reward")
    total = f"{total:.2f}" if isinstance(total, (int, float)) else "?"
    return f"{i + 1}. {view.source} · task {e.get('task')} · {outcome} · return {total} · {len(e['turns'])} turns"


def viewer_html(episodes: list[ViewedEpisode], pieces: TokenPieces, max_episodes: int) -> str:
    if not episodes:
        return "<p class='note'>No trajectories yet (eval_*.jsonl or samples/*.jsonl).</p>"
    shown = episodes[:max_episodes]
    note = (f"<p class='note'>Showing the first {len(shown)} of {len(episodes)} episodes "
            "(raise --max-episodes to see more).</p>") if len(shown) < len(episodes) else ""
    options = "".join(f"<option value='{i}'>{_e(episode_label(i, v))}</option>" for i, v in enumerate(shown))
    blocks = []
    for i, view in enumerate(shown):
        e = view.episode
        meta = (f"env {_e(e.get('env'))} · task {_e(e.get('task'))} · seed {_e(e.get('seed'))} · "
                f"context {_e(e.get('context'))} · stop {_e(e.get('stop_reason'))} · "
                f"score {_fmt(e.get('score'))} · policy version {_e(e.get('policy_version'))}")
        turns = "".join(turn_html(view, t, pieces) for t in range(len(e["turns"])))
        if not e["turns"]:
            turns = "<p class='note'>This episode has no turns.</p>"
        blocks.append(f"<div class='episode' data-index='{i}' data-turns='{len(e['turns'])}' hidden>"
                      f"<p class='meta'>{meta}</p>{turns}</div>")
    return (note + "<div class='controls'><select id='episode-select'>" + options + "</select> "
            "<button id='prev' type='button'>Prev</button> <span id='position'></span> "
            "<button id='next' type='button'>Next</button></div>" + "".join(blocks))


def _chosen_path(root: dict) -> set[int]:
    """ids (Python object ids) of the nodes on the chosen path: the root, then chosen children down."""
    path, node = {id(root)}, root
    while True:
        chosen = [c for c in node.get("children") or [] if isinstance(c, dict) and c.get("chosen")]
        if not chosen:
            return path
        node = chosen[0]
        path.add(id(node))


def tree_svg(root: dict, max_nodes: int = 300) -> str:
    """An inline SVG of one search tree: node area by visit count, label `N=visits Q=q` and the action,
    the chosen path drawn thick and orange. Beyond `max_nodes` the least-visited branches are left out
    (the chosen path first, then children by visits), and a note says how many."""
    chosen = _chosen_path(root)
    kept, depth, children = [root], {id(root): 0}, {}
    queue, total = [root], 1
    while queue:
        node = queue.pop(0)
        kids = [c for c in node.get("children") or [] if isinstance(c, dict)]
        total += len(kids)
        kids.sort(key=lambda c: (id(c) not in chosen, -_number_or(c.get("visits"), 0)))
        keep = kids[: max(0, max_nodes - len(kept))]
        children[id(node)] = keep
        for c in keep:
            depth[id(c)] = depth[id(node)] + 1
        kept += keep
        queue += keep
    x: dict[int, float] = {}
    leaves = 0

    def place(node) -> None:   # leaves left to right, a parent above the middle of its children
        nonlocal leaves
        kids = children[id(node)]
        for c in kids:
            place(c)
        if kids:
            x[id(node)] = (x[id(kids[0])] + x[id(kids[-1])]) / 2
        else:
            x[id(node)], leaves = leaves, leaves + 1

    place(root)
    dx, dy, pad = 90, 90, 50
    most = max(_number_or(n.get("visits"), 0) for n in kept) or 1
    width, height = leaves * dx + 2 * pad, (max(depth.values()) + 1) * dy + pad

    def pos(node) -> tuple[float, float]:
        return pad + x[id(node)] * dx, 30 + depth[id(node)] * dy

    edges, nodes = [], []
    for node in kept:
        x0, y0 = pos(node)
        for c in children[id(node)]:
            x1, y1 = pos(c)
            cls = "edge chosen" if id(c) in chosen and id(node) in chosen else "edge"
            edges.append(f"<line class='{cls}' x1='{x0:.1f}' y1='{y0:.1f}' x2='{x1:.1f}' y2='{y1:.1f}'/>")
        visits = _number_or(node.get("visits"), 0)
        q = node.get("q", node.get("value"))
        r = 5 + 13 * math.sqrt(visits / most)
        cls = "node chosen" if id(node) in chosen else "node"
        action = "(root)" if node is root else str(node.get("action", ""))
        short = action if len(action) <= 16 else action[:15] + "…"
        details = f"{action}\nvisits {visits:g}\nQ {_fmt(q)}\nvalue {_fmt(node.get('value'))}\nid {node.get('id')}"
        nodes.append(
            f"<g class='{cls}'><title>{_e(details)}</title>"
            f"<circle cx='{x0:.1f}' cy='{y0:.1f}' r='{r:.1f}'/>"
            f"<text x='{x0:.1f}' y='{y0 + r + 11:.1f}'>{_e(short)}</text>"
            f"<text class='stats' x='{x0:.1f}' y='{y0 + r + 22:.1f}'>N={visits:g} Q={_fmt(q)}</text></g>"
        )
    note = f"<p class='note'>{total - len(kept)} of {total} nodes not drawn.</p>" if total > len(kept) else ""
    return (f"{note}<div class='tree'><svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' "
            f"height='{height:.0f}' viewBox='0 0 {width:.0f} {height:.0f}'>{''.join(edges)}{''.join(nodes)}</svg></div>")


def _number_or(value, default: float) -> float:
    number = _number(value)
    return default if math.isnan(number) else number


# -- the page ----------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: .5em; margin: .2em 0; }
.note { color: #666; font-style: italic; }
.curves { display: flex; flex-wrap: wrap; gap: .5em; }
table { border-collapse: collapse; } th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; } table.numbers th, table.eval td:first-child { text-align: left; }
.controls { position: sticky; top: 0; background: #fff; padding: .5em 0; border-bottom: 1px solid #eee; }
.controls select { max-width: 70%; }
.field h4 { margin: .6em 0 .1em; font-size: .85em; color: #555; }
.thinking pre { background: #f3f0fa; } .action pre { background: #eef7ee; font-weight: bold; }
.tok { border-right: 1px dotted #ccc; } .tok.trained { background: #cfe3ff; }
.tok.trained.pos { background: #c6efc6; } .tok.trained.neg { background: #f7c6c6; } .tok.trained.zero { background: #e4e4e4; }
.tree { overflow-x: auto; border: 1px solid #eee; }
.tree line.edge { stroke: #aaa; stroke-width: 1.5; } .tree line.edge.chosen { stroke: #e07000; stroke-width: 4; }
.tree circle { fill: #8fb3d9; stroke: #4a6f96; } .tree .chosen circle { fill: #ffb366; stroke: #e07000; stroke-width: 3; }
.tree text { font-size: 10px; text-anchor: middle; } .tree text.stats { fill: #555; }
"""

JS = """
(function () {
  var select = document.getElementById('episode-select');
  if (!select) return;
  var episodes = document.querySelectorAll('.episode');
  var prev = document.getElementById('prev'), next = document.getElementById('next');
  var position = document.getElementById('position');
  var state = {episode: 0, turn: 0};
  function show() {
    episodes.forEach(function (el, i) { el.hidden = i !== state.episode; });
    var current = episodes[state.episode];
    var turns = current.querySelectorAll('.turn');
    turns.forEach(function (el, i) { el.hidden = i !== state.turn; });
    position.textContent = turns.length ? 'turn ' + (state.turn + 1) + ' / ' + turns.length : 'no turns';
    prev.disabled = state.turn <= 0;
    next.disabled = state.turn >= turns.length - 1;
    select.value = String(state.episode);
  }
  function step(delta) {
    var n = episodes[state.episode].querySelectorAll('.turn').length;
    state.turn = Math.max(0, Math.min(n - 1, state.turn + delta));
    show();
  }
  prev.addEventListener('click', function () { step(-1); });
  next.addEventListener('click', function () { step(1); });
  select.addEventListener('change', function () { state.episode = Number(select.value); state.turn = 0; show(); });
  document.addEventListener('keydown', function (event) {
    if (event.target === select) return;
    if (event.key === 'ArrowRight') step(1);
    if (event.key === 'ArrowLeft') step(-1);
  });
  show();
})();
"""


def build_report(run_dir: Path, *, tokenizer="auto", max_episodes: int = 200, max_tree_nodes: int = 300) -> str:
    """The report page of `run_dir` as one HTML string. `tokenizer`: "auto" (the run's own, see
    `find_tokenizer`), None (show token ids), or a `tokenizers.Tokenizer`."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    config_file = run_dir / "config.yaml"
    config_text = config_file.read_text(errors="replace") if config_file.is_file() else None
    rows = read_jsonl(run_dir / "metrics.jsonl")
    evals = _read_json(run_dir / "eval.json")
    episodes = load_episodes(run_dir)
    trees = load_trees(run_dir)
    pieces = TokenPieces(find_tokenizer(run_dir) if isinstance(tokenizer, str) and tokenizer == "auto" else tokenizer)

    planned = re.search(r"^iterations:\s*(\d+)", config_text or "", re.MULTILINE)
    done = max((r["iteration"] for r in rows if isinstance(r.get("iteration"), int)), default=0)
    status = "finished" if (run_dir / "final").is_dir() else "in progress (no final/ model yet)"
    progress = f"iteration {done}" + (f" of {planned.group(1)}" if planned else "")

    panels = curve_panels(rows)
    curves = ("<div class='curves'>" + "".join(
        f"<figure><img alt='{_e(title)}' src='data:image/png;base64,{png}'/></figure>" for title, png in panels
    ) + "</div>") if panels else "<p class='note'>No metrics yet (metrics.jsonl is missing or empty).</p>"
    config = f"<pre class='config'>\n{_e(config_text)}</pre>" if config_text is not None else \
        "<p class='note'>No config.yaml.</p>"
    search = "".join(f"<h3>{_e(label)}</h3>{tree_svg(root, max_tree_nodes)}" for label, root in trees) or \
        "<p class='note'>No search trees (search/*.json).</p>"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>turnrl report: {_e(run_dir.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>turnrl run report: {_e(run_dir.name)}</h1>"
        f"<p class='status'>{_e(status)} · {_e(progress)} · {len(episodes)} trajectories · {len(trees)} trees</p>"
        f"<h2>Curves</h2>{curves}"
        f"<h2>Evaluation</h2>{eval_table(evals)}"
        f"<h2>Episodes</h2><section id='viewer'>{viewer_html(episodes, pieces, max_episodes)}</section>"
        f"<h2>Search trees</h2>{search}"
        f"<h2>Config</h2>{config}"
        f"<script>{JS}</script></body></html>"
    )


def write_report(run_dir: Path, output: Path | None = None, **kwargs) -> Path:
    """Write the report of `run_dir` to `output` (default RUN_DIR/report.html); returns the path."""
    run_dir = Path(run_dir)
    page = build_report(run_dir, **kwargs)
    output = Path(output) if output is not None else run_dir / "report.html"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output

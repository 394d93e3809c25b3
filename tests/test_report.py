"""`turnrl report`: the HTML run report, unit by unit, then on a real short training run rendered in headless
Chromium (driven over the DevTools protocol): clicking Next steps the episode viewer, a `<script>` in an
observation stays text, and a screenshot decodes."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from turnrl.cli import app
from turnrl.report import (
    ReportError,
    TokenPieces,
    build_report,
    check_run_dir,
    curve_panels,
    read_jsonl,
    tree_svg,
    turn_tokens,
    write_report,
)

INJECTION = "<script>window.__turnrlInjected = 1</script><img src=x onerror=\"window.__turnrlInjected = 2\">"


def run_cli(*args, ok: bool = True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok and result.exit_code != 0:
        raise AssertionError(f"turnrl {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
                             ) from result.exception
    return result


def turn(observation: str, response: str = "<think>hm</think><action>toggle 1</action>", **extra) -> dict:
    return {"observation": observation, "response": response, "action": "toggle 1", "completion_ids": [],
            "logprobs": [], "reward": 0.0, "penalty": 0.0, "done": False, "info": {"invalid": False},
            "prompt_ids": None, "span": None, "next_observation": "next", **extra}


def episode(turns: list[dict], **extra) -> dict:
    return {"env": "lights", "task": 3, "seed": 0, "group_id": 0, "context": "full", "turns": turns,
            "token_ids": None, "stop_reason": "done", "policy_version": 0, "success": False, "score": 0.0,
            "total_reward": 0.0, **extra}


def write_lines(path: Path, records: list[dict], tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


class TextOf(HTMLParser):
    """The text inside the <pre> of every `<div class='field NAME'>` of the page, in order."""

    def __init__(self, name: str):
        super().__init__(convert_charrefs=True)
        self.name, self.depth, self.inside, self.texts = name, 0, False, []

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag == "div" and "field" in classes and self.name in classes:
            self.inside = True
        elif tag == "pre" and self.inside:
            self.texts.append("")

    def handle_endtag(self, tag):
        if tag == "div" and self.inside:
            self.inside = False

    def handle_data(self, data):
        if self.inside and self.texts:
            self.texts[-1] += data


def field_texts(page: str, name: str) -> list[str]:
    parser = TextOf(name)
    parser.feed(page)
    # The page writes a newline after <pre> (browsers drop it); the parser keeps it.
    return [t.removeprefix("\n") for t in parser.texts]


# -- reading a run ------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=8), max_size=3), max_size=5),
       st.integers(min_value=1, max_value=200), st.dictionaries(st.text(max_size=5), st.text(max_size=20), min_size=1))
def test_read_jsonl_keeps_whole_lines_and_skips_a_half_written_last_one(tmp_path_factory, records, cut, last):
    """A run in progress may be caught mid-write: every strict prefix of a JSON object line is skipped."""
    line = json.dumps(last)
    path = tmp_path_factory.mktemp("jsonl") / "metrics.jsonl"
    write_lines(path, records, tail=line[: min(cut, len(line) - 1)])
    assert read_jsonl(path) == records


def test_read_jsonl_skips_blank_and_non_object_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"iteration": 1}\n\n[1, 2]\n"text"\nnot json\n{"iteration": 2}\n')
    assert read_jsonl(path) == [{"iteration": 1}, {"iteration": 2}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="not a folder"):
        check_run_dir(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ReportError, match="not a turnrl run folder.*config.yaml"):
        check_run_dir(tmp_path)
    result = run_cli("report", tmp_path, ok=False)
    assert result.exit_code == 2
    assert "not a turnrl run folder" in " ".join(result.output.split())
    assert not (tmp_path / "report.html").exists()


# -- curves ---------------------------------------------------------------------------------------------

def test_curve_panels_draw_the_keys_that_have_numbers():
    rows = [{"iteration": i, "success_rate": 0.1 * i, "kl": None, "clip_bias_norm_mean": 0.5,
             "alp_sigma_layer0": 0.01 * i, "alp_sigma_layer1": 0.02} for i in (1, 2, 3)]
    titles = [title for title, _ in curve_panels(rows)]
    assert titles == ["success rate", "clip-bias norm ‖C‖ (ST-PPO)", "ALP σ per layer"]   # kl: all None
    png = base64.b64decode(curve_panels(rows)[0][1])
    assert png.startswith(b"\x89PNG")
    assert curve_panels([]) == []


# -- episodes and escaping ----------------------------------------------------------------------------

def test_turn_tokens_full_context_cut_at_the_previous_turns_end():
    record = episode([turn("a", completion_ids=[5, 6], logprobs=[-1.0, -2.0], span=[3, 5]),
                      turn("b", completion_ids=[9], logprobs=[-0.5], span=[7, 8])],
                     token_ids=[1, 2, 3, 5, 6, 7, 8, 9])
    assert turn_tokens(record, 0) == ([1, 2, 3, 5, 6], 3, [-1.0, -2.0])
    assert turn_tokens(record, 1) == ([7, 8, 9], 2, [-0.5])


def test_turn_tokens_window_context_prompt_then_completion():
    record = episode([turn("a", completion_ids=[5, 6], logprobs=[-1.0, -2.0], prompt_ids=[1, 2, 3])],
                     context="window:2")
    assert turn_tokens(record, 0) == ([1, 2, 3, 5, 6], 3, [-1.0, -2.0])
    assert turn_tokens(episode([turn("scripted")]), 0) == ([], 0, [])


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from tokenizers import Tokenizer

    from turnrl.agents.models import resolve_model_path

    return Tokenizer.from_file(str(Path(resolve_model_path("tiny", progress=False)) / "tokenizer.json"))


# U+FFFD itself is left out: the pieces use it to tell a character split over tokens.
@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\ufffd", blacklist_categories=("Cs",)), max_size=40))
def test_token_pieces_join_to_the_decoded_text(tiny_tokenizer, text):
    """Byte-level BPE splits characters of several bytes over tokens; the pieces still join to the text."""
    ids = tiny_tokenizer.encode(text).ids
    pieces = TokenPieces(tiny_tokenizer)(ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tiny_tokenizer.decode(ids, skip_special_tokens=False)
    assert all("\ufffd" not in piece for piece in pieces)
    assert TokenPieces(None)([7, 8]) == ["[7]", "[8]"]


def test_trained_tokens_are_highlighted_and_coloured_by_advantage(tmp_path):
    record = episode([turn("a", completion_ids=[5, 6], logprobs=[-1.0, -2.0], span=[3, 5])],
                     token_ids=[1, 2, 3, 5, 6])
    write_lines(tmp_path / "samples" / "iter-000001.jsonl", [{"iteration": 1, "episode": record, "advantages": [-0.75]}])
    (tmp_path / "config.yaml").write_text("iterations: 4\n")
    page = build_report(tmp_path, tokenizer=None)
    assert page.count("class='tok trained neg'") == 2 and page.count("class='tok'") == 3
    assert "log-prob -2.000" in page and "samples iter 1" in page and "-0.750" in page
    assert "in progress" in page and "iteration 0 of 4" in page


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=60) | st.sampled_from([INJECTION, "</pre><b>x</b>", "&amp; &lt;", "]]><!--", "[red]x[/red]"]),
       st.text(max_size=30))
def test_text_from_episodes_is_escaped(tmp_path_factory, observation, response):
    """Whatever an observation or response holds, the page shows it as text and adds no element."""
    run_dir = tmp_path_factory.mktemp("run")
    write_lines(run_dir / "eval_zero_shot.jsonl", [episode([turn(observation, response)])])
    (run_dir / "config.yaml").write_text(f"note: {json.dumps(observation)}\n")
    page = build_report(run_dir, tokenizer=None)
    assert page.count("<script") == 1   # the viewer's own
    assert "<img" not in page and "<b>" not in page
    assert field_texts(page, "observation") == [observation]
    assert field_texts(page, "response") == [response]


# -- search trees ---------------------------------------------------------------------------------------

NESTED_TREE = {"task": 7, "root": {"id": 0, "visits": 10, "q": 0.4, "children": [
    {"id": 1, "parent": 0, "action": "toggle 1", "visits": 7, "q": 0.6, "chosen": True, "children": [
        {"id": 3, "parent": 1, "action": "<b>toggle</b> 2", "visits": 5, "value": 0.9, "chosen": True}]},
    {"id": 2, "parent": 0, "action": "toggle 3", "visits": 3, "q": 0.1, "chosen": False}]}}


def test_tree_svg_labels_visits_and_highlights_the_chosen_path():
    svg = tree_svg(NESTED_TREE["root"])
    assert svg.count("class='edge chosen'") == 2 and svg.count("class='edge'") == 1
    assert svg.count("class='node chosen'") == 3   # root, toggle 1, toggle 2
    assert "N=7 Q=0.600" in svg and "N=5 Q=0.900" in svg
    assert "&lt;b&gt;toggle&lt;/b&gt; 2" in svg and "<b>" not in svg


def test_tree_svg_leaves_out_the_least_visited_beyond_the_budget():
    root = {"id": 0, "visits": 100, "children": [{"id": i, "action": f"a{i}", "visits": i} for i in range(1, 11)]}
    svg = tree_svg(root, max_nodes=4)
    assert "7 of 11 nodes not drawn" in svg
    assert "N=10 " in svg and "N=8 " in svg and "N=7 " not in svg


def test_search_trees_are_read_nested_flat_and_as_lines(tmp_path):
    flat = {"task": 8, "nodes": [{"id": "r", "parent": None, "visits": 4},
                                 {"id": "c", "parent": "r", "action": "go", "visits": 4, "chosen": True}]}
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "trees.json").write_text(json.dumps([NESTED_TREE, flat]))
    write_lines(tmp_path / "search" / "more.jsonl", [NESTED_TREE], tail='{"root": {"visits"')
    (tmp_path / "config.yaml").write_text("env: lights\n")
    page = build_report(tmp_path, tokenizer=None)
    assert page.count("<svg") == 3
    assert "trees.json #0 (task 7)" in page and "trees.json #1 (task 8)" in page and "more.jsonl #0" in page


# -- a real run ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_run(tmp_path_factory, one_thread):
    """`turnrl train` with tiny on lights for 2 iterations with 2 held-out episodes per evaluation."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    run_cli("train", "--env", "lights", "--model", "tiny", "--iterations", "2", "--eval_episodes", "2",
            "--tasks_per_iteration", "2", "--group_size", "2", "--max_turns", "3", "--max_new_tokens", "8",
            "--output_dir", run_dir)
    return run_dir


@pytest.fixture
def decorated_run(real_run, tmp_path):
    """A copy of the real run still "in progress": no final/ folder but its tokenizer, a half-written
    metrics line, sampled training episodes with advantages (one observation holding a script), a tree."""
    run_dir = tmp_path / "run"
    shutil.copytree(real_run, run_dir, ignore=shutil.ignore_patterns("model.safetensors"))
    (run_dir / "checkpoints" / "iter-000001").mkdir(parents=True)
    (run_dir / "final").rename(run_dir / "checkpoints" / "iter-000001" / "model")
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write('{"iteration": 3, "success_rate": 0.')
    sample = read_jsonl(real_run / "eval_after_rl.jsonl")[0]
    sample["turns"][0]["observation"] = INJECTION + " Lamps: 1 off."
    advantages = [0.25 * (t + 1) for t in range(len(sample["turns"]))]
    write_lines(run_dir / "samples" / "iter-000002.jsonl", [{"iteration": 2, "episode": sample,
                                                             "advantages": advantages}])
    (run_dir / "search").mkdir()
    (run_dir / "search" / "tree-0.json").write_text(json.dumps(NESTED_TREE))
    return run_dir


def test_report_of_a_real_run(real_run, tmp_path):
    out = tmp_path / "elsewhere" / "r.html"
    result = run_cli("report", real_run, "--output", out)
    assert "report:" in result.output and out.is_file()
    page = out.read_text()
    evals = json.loads((real_run / "eval.json").read_text())
    assert list(evals) == ["zero_shot", "after_rl"]
    for phase, row in evals.items():
        assert f"<tr><td>{phase}</td><td>{row['success_rate']:.3f}</td>" in page
    assert "finished" in page and "iteration 2 of 2" in page
    assert "model: tiny" in page and "iterations: 2" in page   # the resolved config
    assert page.count("<img alt=") >= 4   # success, return, kl, clip fraction
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    episodes = [e for phase in ("zero_shot", "after_rl") for e in read_jsonl(real_run / f"eval_{phase}.jsonl")]
    assert page.count("<div class='episode'") == len(episodes) == 4
    trained = sum(len(t["completion_ids"]) for e in episodes for t in e["turns"])
    assert page.count("class='tok trained'") == trained > 0   # decoded with the run's tokenizer: no raw ids
    assert "[202]" not in page
    run_cli("report", real_run)
    assert (real_run / "report.html").is_file()


def test_report_of_a_run_in_progress(decorated_run):
    path = write_report(decorated_run)
    page = path.read_text()
    assert path == decorated_run / "report.html"
    assert "in progress" in page and "iteration 2 of 2" in page   # the half-written iteration 3 is skipped
    assert "samples iter 2" in page and "<svg" in page and "N=7 Q=0.600" in page
    assert "&lt;script&gt;window.__turnrlInjected" in page and page.count("<script") == 1


# -- in a real browser ----------------------------------------------------------------------------------------

def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


class Browser:
    """Headless Chromium driven over the Chrome DevTools Protocol (one page, one websocket)."""

    def __init__(self, executable: str, profile: Path):
        from websockets.sync.client import connect

        self.exits = contextlib.ExitStack()
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1200,1600",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        # Chromium writes its port once it listens; the limit only stops a broken install hanging the suite.
        limit = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > limit:
                self.close()
                raise RuntimeError(f"chromium did not start (exit code {self.process.returncode})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        page = next(t for t in targets if t["type"] == "page")
        self.socket = self.exits.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:   # events arrive between answers; skip them
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        limit = time.monotonic() + 60
        while self.evaluate("document.readyState + ' ' + location.href") != f"complete {url}":
            assert time.monotonic() < limit, f"{url} did not load"
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the middle of the element."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        self.exits.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def browser(tmp_path):
    executable = find_chromium()
    if executable is None:
        pytest.skip("chromium not found: install Debian's `chromium` package (.ci/run does) to run the browser test")
    pytest.importorskip("websockets", reason="the browser test needs `websockets` (in the dev extra)")
    instance = Browser(executable, tmp_path / "profile")
    yield instance
    instance.close()


VISIBLE = "document.querySelector('.episode:not([hidden]) .turn:not([hidden])')"


def test_the_episode_viewer_in_headless_chromium(decorated_run, browser, tmp_path):
    page = write_report(decorated_run)
    browser.open(page.resolve().as_uri())
    first = read_jsonl(decorated_run / "eval_zero_shot.jsonl")[0]
    observation = f"{VISIBLE}.querySelector('.observation pre').textContent"
    assert browser.evaluate(observation) == first["turns"][0]["observation"]
    assert browser.evaluate("document.getElementById('position').textContent") == f"turn 1 / {len(first['turns'])}"
    assert browser.evaluate("document.getElementById('prev').disabled") is True

    browser.click("#next")
    assert browser.evaluate(observation) == first["turns"][1]["observation"]
    assert browser.evaluate("document.getElementById('position').textContent") == f"turn 2 / {len(first['turns'])}"
    assert browser.evaluate(f"{VISIBLE}.querySelectorAll('.tok.trained').length") == \
        len(first["turns"][1]["completion_ids"])
    browser.click("#prev")
    assert browser.evaluate(observation) == first["turns"][0]["observation"]

    # The sampled episode with a script in its first observation: shown as text, never run.
    index = browser.evaluate("[...document.querySelectorAll('#episode-select option')]"
                             ".findIndex(o => o.textContent.includes('samples iter 2'))")
    assert index >= 0
    browser.evaluate(f"(() => {{ const s = document.getElementById('episode-select'); s.value = '{index}';"
                     "s.dispatchEvent(new Event('change')); })()")
    assert browser.evaluate(observation) == INJECTION + " Lamps: 1 off."
    assert browser.evaluate("typeof window.__turnrlInjected") == "undefined"
    assert browser.evaluate(f"{VISIBLE}.querySelector('td.advantage').textContent") == "0.250"
    assert browser.evaluate(f"{VISIBLE}.querySelectorAll('.tok.trained.pos').length") > 0
    browser.click("#next")
    assert browser.evaluate(f"{VISIBLE}.querySelector('td.advantage').textContent") == "0.500"
    assert browser.evaluate("typeof window.__turnrlInjected") == "undefined"

    png = browser.screenshot()
    (tmp_path / "report.png").write_bytes(png)
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG" and image.width > 100 and image.height > 100
    darkest, lightest = image.convert("L").getextrema()
    assert darkest < lightest   # not a blank page

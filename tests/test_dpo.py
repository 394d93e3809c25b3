"""Step-level DPO through TRL on search pairs: a handful of pairs raises the chosen-over-rejected log-prob
margin of the tiny model, with the reference recomputed (LoRA off) or taken from the logged behaviour log-probs."""

from __future__ import annotations

import pytest
from test_mcts import CORRIDOR, RandomAdmissible

from turnrl.agents.models import load_model
from turnrl.algorithms.dpo import chosen_margins, dpo_dataset, dpo_train, run_dpo
from turnrl.search import SearchConfig, preference_dataset, preference_pairs, search_tasks


@pytest.fixture(scope="module")
def pairs():
    tokenizer = load_model("tiny")[1]
    config = SearchConfig(simulations=30, branching=3, expansion_rounds=8, alpha=1.0, max_turns=3, context="window:2")
    trees = search_tasks(RandomAdmissible(tokenizer, seed=1), "corridor", [0, 1], config, env_kwargs=CORRIDOR)
    rows = preference_pairs(trees, tokenizer, threshold=0.1)
    assert len(rows) >= 4
    return preference_dataset(rows[:6])


@pytest.mark.parametrize("reference", ["recompute", "behaviour"])
def test_dpo_raises_the_chosen_over_rejected_margin(pairs, reference, tmp_path, one_thread):
    model, tokenizer = load_model("tiny", lora=True)
    before = chosen_margins(model, tokenizer, pairs)
    metrics = dpo_train(model, tokenizer, pairs, output_dir=tmp_path, beta=0.1, reference=reference, epochs=3,
                        learning_rate=5e-3, batch_size=2, progress=False)
    after = chosen_margins(model, tokenizer, pairs)
    assert sum(after) / len(after) > sum(before) / len(before) + 0.5
    assert "loss" in metrics


def test_behaviour_reference_columns_and_its_temperature_check(pairs):
    data = dpo_dataset(pairs, "behaviour")
    assert data.column_names == ["prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps"]
    assert data["ref_chosen_logps"] == pairs["chosen_logps"]
    hot = pairs.map(lambda row: {"temperature": 1.3})
    with pytest.raises(ValueError, match="temperature 1"):
        dpo_dataset(hot, "behaviour")
    assert dpo_dataset(hot, "recompute").column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]
    with pytest.raises(ValueError, match="recompute, behaviour"):
        dpo_dataset(pairs, "frozen")


def test_no_pairs_is_an_error_that_says_what_to_do(tmp_path):
    model, tokenizer = load_model("tiny", lora=True)
    with pytest.raises(ValueError, match="lower the threshold"):
        dpo_train(model, tokenizer, preference_dataset([]), output_dir=tmp_path)


def test_run_dpo_saves_an_adapter_and_reports_margins(pairs, tmp_path, one_thread):
    pairs.save_to_disk(str(tmp_path / "pairs"))
    summary = run_dpo(model="tiny", pairs=tmp_path / "pairs", output_dir=tmp_path / "out", epochs=2,
                      learning_rate=5e-3, batch_size=2, progress=False)
    assert summary["margin_after"] > summary["margin_before"]
    assert (tmp_path / "out" / "final" / "adapter_config.json").is_file()
    with pytest.raises(FileNotFoundError, match="pairs/ folder"):
        run_dpo(model="tiny", pairs=tmp_path / "nowhere", output_dir=tmp_path / "x", progress=False)


def test_an_empty_pairs_folder_round_trips(tmp_path):
    from datasets import load_from_disk

    from turnrl.search import save_pairs

    save_pairs(preference_dataset([]), tmp_path / "pairs")
    empty = load_from_disk(str(tmp_path / "pairs"))
    assert len(empty) == 0 and {"prompt_ids", "chosen_ids", "delta_q"} <= set(empty.column_names)

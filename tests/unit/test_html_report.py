"""The HTML report: every section, inline plots, the run's own numbers, nothing loaded from the network."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from recfunnel.cli import main
from recfunnel.config import config_from_dict
from recfunnel.data.dataset import build_training_data
from recfunnel.evaluation.html_report import SECTIONS, render_report, write_report
from recfunnel.pipeline.offline.evaluate import evaluate_funnel
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.pipeline.online.funnel import Funnel
from recfunnel.stages.rank.neural import NeuralRanker

N_USERS, N_ITEMS = 60, 40
CHANNELS = {"channels": [{"kind": "itemcf", "quota": 30}, {"kind": "popular", "quota": 20}],
            "retrieval_k": 40, "rank_k": 20, "history_length": 10}
NEURAL = {**CHANNELS,
          "ranker": {"kind": "neural", "params": {
              "model": "deepfm", "model_params": {"embed_dim": 4, "hidden": [16]},
              "trainer": {"epochs": 3, "batch_size": 256, "min_steps_per_epoch": 4, "patience": 3,
                          "threads": 1},
              "negatives_per_user": 20, "validation_fraction": 0.3}},
          "reranker": {"kind": "mmr"}}
PLOTTED = ("funnel", "latency", "curves", "exposure", "categories", "training")


def _interactions(seed: int = 0) -> pd.DataFrame:
    """Two planted groups of users, each clicking the even or the odd items."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        items = rng.choice(np.arange(u % 2, N_ITEMS, 2), 8, replace=False)
        rows += [(f"user{u}", f"item{i}", 1_600_000_000 + 3600 * j + u) for j, i in enumerate(items)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def _category(funnel: Funnel) -> np.ndarray:
    return np.array([int(i[4:]) % 4 for i in funnel.item_ids.ids.astype(str)], np.int64)


def _section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.S)
    assert match, f"no section {section_id!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    df = _interactions()
    position = df.groupby("user_id").cumcount(ascending=False)
    train, test = df[position >= 2], df[position < 2]
    funnel = fit_funnel(build_training_data(train), config_from_dict(NEURAL), progress=False)
    result = evaluate_funnel(funnel, test, (5, 10), item_category=_category(funnel), keep_recommendations=True)
    page = render_report(result, funnel, comparison={"this funnel": {"recall@10": result["metrics"]["recall@10"]}})
    return funnel, test, result, page


def test_every_section_has_a_heading_and_its_plot_inline(run):
    _, _, _, page = run
    for section_id in SECTIONS:
        assert "<h2>" in _section(page, section_id)
    for section_id in PLOTTED:
        assert "<svg" in _section(page, section_id), section_id
    assert "<img" not in page  # every plot is inline SVG, not a file or data URL


def test_the_runs_numbers_are_in_their_sections(run):
    funnel, _, result, page = run
    metrics = result["metrics"]
    assert f"{metrics['recall@10']:.4f}" in _section(page, "metrics")
    assert f"{metrics['ndcg@5']:.4f}" in _section(page, "metrics")
    assert f"{metrics['recall@10']:.4f}" in _section(page, "curves")
    assert f"{metrics['ndcg@10']:.4f}" in _section(page, "curves")
    stages = {row["stage"]: row for row in result["funnel"]}
    assert set(stages) >= {"retrieval:itemcf", "retrieval:popular", "retrieval", "rank", "rerank"}
    assert f"{stages['retrieval']['candidates_out']:.1f}" in _section(page, "funnel")
    assert f"{stages['rank']['recall']:.4f}" in _section(page, "funnel")
    assert f"{stages['rank']['ms_per_user']:.3f}" in _section(page, "latency")
    # the exposure section's Gini is the metrics' Gini of the longest lists
    assert f"{metrics['gini@10']:.4f}" in _section(page, "exposure")
    assert f"{metrics['coverage@10']:.4f}" in _section(page, "exposure")
    categories = _section(page, "categories")
    assert re.search(r"categories in the catalogue</td><td>4<", categories)
    curves = funnel.ranker.training_curves()["deepfm"]
    assert len(curves["train_loss"]) >= 1 and len(curves["valid_metric"]) == len(curves["train_loss"])
    best = curves["best_epoch"]
    training = _section(page, "training")
    assert f"{curves['valid_metric'][best]:.4f}" in training
    assert f"{curves['train_loss'][0]:.4f}" in training
    assert f"best: epoch {best + 1}" in training
    assert str(len(funnel.item_ids)) in _section(page, "summary")
    assert "deepfm" in _section(page, "summary")


def test_nothing_is_loaded_from_the_network_and_rendering_is_deterministic(run):
    funnel, _, result, page = run
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(?!#)", page)  # CSS/SVG url() only to fragments in the page
    assert "@import" not in page and "<script" not in page and "<link" not in page
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # ids of the inline SVGs are unique in the page
    again = render_report(result, funnel, comparison={"this funnel": {"recall@10": result["metrics"]["recall@10"]}})
    assert again == page


def test_a_funnel_without_ranker_or_categories_says_so(tmp_path):
    df = _interactions(seed=1)
    position = df.groupby("user_id").cumcount(ascending=False)
    funnel = fit_funnel(build_training_data(df[position >= 2]), config_from_dict(CHANNELS), progress=False)
    assert all(stage.training_curves() == {} for _, stage in funnel.stages())
    result = evaluate_funnel(funnel, df[position < 2], (10,), keep_recommendations=True)
    path = write_report(tmp_path / "r.html", result, funnel)
    page = path.read_text()
    assert "no neural model in this funnel" in _section(page, "training")
    assert "<svg" not in _section(page, "training")
    assert "no category data" in _section(page, "categories")
    assert 'id="comparison"' not in page
    assert "<svg" in _section(page, "exposure")
    # without the lists the list-based sections say how to get them instead of failing
    plain = evaluate_funnel(funnel, df[position < 2], (10,))
    assert "recommendations" not in plain
    assert "keep_recommendations=True" in _section(render_report(plain, funnel), "curves")


def test_training_curves_are_saved_with_the_model(run, tmp_path):
    funnel, _, _, _ = run
    funnel.save(tmp_path / "model")
    loaded = Funnel.load(tmp_path / "model")
    assert loaded.ranker.training_curves() == funnel.ranker.training_curves() != {}
    # a summary without the curves (not trained in this process, or an older artifact) gives none
    ranker = NeuralRanker(funnel.ranker.config)
    assert ranker.training_curves() == {}
    ranker.train_summary_ = {"rows": 10, "positives": 2}
    assert ranker.training_curves() == {}


def test_cli_evaluate_writes_the_report(run, tmp_path, capsys):
    funnel, test, _, _ = run
    funnel.save(tmp_path / "model")
    test.to_csv(tmp_path / "test.csv", index=False)
    report, metrics = tmp_path / "out" / "report.html", tmp_path / "metrics.json"
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--test", str(tmp_path / "test.csv"),
                 "--k", "5,10", "--out", str(metrics), "--report", str(report), "--quiet"]) == 0
    assert f"report written to {report}" in capsys.readouterr().err
    page = report.read_text()
    for section_id in ("metrics", "funnel", "curves", "exposure", "training"):
        assert "<svg" in _section(page, section_id) or section_id == "metrics"
    # the loaded model's training curves are in the report; the lists stay out of the JSON
    assert "best: epoch" in _section(page, "training")
    assert set(json.loads(metrics.read_text())) == {"metrics", "funnel", "counts"}

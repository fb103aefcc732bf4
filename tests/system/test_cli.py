"""The CLI contract: the commands other tools call, and one-line errors on bad input."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recfunnel.cli import main

FAST_CONFIG = {
    "channels": [{"kind": "itemcf", "quota": 30}, {"kind": "popular", "quota": 20}],
    "ranker": {"kind": "lightgbm", "params": {"n_estimators": 20, "min_child_samples": 5}},
    "reranker": {"kind": "mmr"},
    "retrieval_k": 40, "rank_k": 20, "history_length": 20,
}


def _interactions(n_users=60, n_items=40, per_user=8, seed=0, constant_time=False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 2
        items = rng.choice(np.arange(group, n_items, 2), per_user, replace=False)
        rows += [(f"user{u}", f"item{i}", 0 if constant_time else 1_600_000_000 + 3600 * j + u)
                 for j, i in enumerate(items)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    df = _interactions()
    position = df.groupby("user_id").cumcount(ascending=False)
    df[position >= 2].to_csv(d / "train.csv", index=False)
    df[position < 2].to_csv(d / "test.csv", index=False)
    items = pd.DataFrame({"item_id": [f"item{i}" for i in range(40)],
                          "genres": ["a|b" if i % 2 else "c" for i in range(40)],
                          "year": [1990 + i for i in range(40)]})
    items.to_csv(d / "items.csv", index=False)
    (d / "config.json").write_text(json.dumps(FAST_CONFIG))
    (d / "users.txt").write_text("user0\nuser1\nstranger\n")
    assert main(["fit", "--interactions", str(d / "train.csv"), "--items", str(d / "items.csv"),
                 "--config", str(d / "config.json"), "--out", str(d / "model"), "--quiet"]) == 0
    return d


def test_recommend_writes_the_contract_csv(workdir):
    out = workdir / "recs.csv"
    assert main(["recommend", "--model", str(workdir / "model"), "--users-file", str(workdir / "users.txt"),
                 "--k", "5", "--out", str(out), "--quiet"]) == 0
    recs = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score"]
    assert recs.groupby("user_id").size().to_dict() == {"stranger": 5, "user0": 5, "user1": 5}
    train = pd.read_csv(workdir / "train.csv")
    seen = set(zip(train.user_id, train.item_id, strict=False))
    assert not any((u, i) in seen for u, i in zip(recs.user_id, recs.item_id, strict=False))
    assert recs[recs.user_id == "user0"]["rank"].tolist() == [1, 2, 3, 4, 5]


def test_evaluate_prints_a_table_and_writes_json(workdir, capsys):
    out = workdir / "metrics.json"
    assert main(["evaluate", "--model", str(workdir / "model"), "--test", str(workdir / "test.csv"),
                 "--k", "5,10", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "ndcg" in printed and "retrieval" in printed
    result = json.loads(out.read_text())
    assert 0.0 <= result["metrics"]["recall@10"] <= 1.0
    assert result["metrics"]["recall@10"] > 0.2  # the two planted groups make this easy
    assert [row["stage"] for row in result["funnel"]][-2:] == ["rank", "rerank"]


def test_fit_on_constant_timestamps_weights_and_no_side_tables(tmp_path):
    df = _interactions(constant_time=True)
    df["weight"] = np.arange(len(df)) % 5 + 1
    df.to_csv(tmp_path / "plays.csv", index=False)
    (tmp_path / "config.json").write_text(json.dumps(FAST_CONFIG))
    assert main(["fit", "--interactions", str(tmp_path / "plays.csv"), "--config", str(tmp_path / "config.json"),
                 "--out", str(tmp_path / "model"), "--quiet"]) == 0
    (tmp_path / "users.txt").write_text("user_id\nuser3\n")
    assert main(["recommend", "--model", str(tmp_path / "model"), "--users-file", str(tmp_path / "users.txt"),
                 "--k", "3", "--out", str(tmp_path / "r.csv"), "--quiet"]) == 0
    recs = pd.read_csv(tmp_path / "r.csv")
    assert len(recs) == 3 and recs["item_id"].str.slice(4).astype(int).mod(2).eq(1).all()


def _error_of(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("user_id,item_id\nu1,i1\n", "timestamp"),
    ("user_id,timestamp\nu1,5\n", "item_id"),
    ("user_id,item_id,timestamp\nu1,i1,not-a-time\n", "timestamp"),
])
def test_bad_interactions_give_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, line = _error_of(["fit", "--interactions", str(path), "--out", str(tmp_path / "m"), "--quiet"], capsys)
    assert code == 2 and line.startswith("error:") and message in line.lower()
    assert not (tmp_path / "m").exists()


def test_missing_files_and_bad_models_give_one_line_errors(tmp_path, capsys, workdir):
    code, line = _error_of(["fit", "--interactions", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "m")],
                           capsys)
    assert code == 2 and line.startswith("error:")
    code, line = _error_of(["recommend", "--model", str(tmp_path), "--users-file", str(workdir / "users.txt"),
                            "--out", str(tmp_path / "r.csv")], capsys)
    assert code == 2 and "model directory" in line
    (tmp_path / "cfg.json").write_text('{"channels": [{"kind": "warp-drive"}]}')
    code, line = _error_of(["fit", "--interactions", str(workdir / "train.csv"), "--config",
                            str(tmp_path / "cfg.json"), "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "warp-drive" in line


def test_bad_k_is_rejected_by_the_parser(workdir):
    proc = subprocess.run([sys.executable, "-m", "recfunnel.cli", "evaluate", "--model", str(workdir / "model"),
                           "--test", str(workdir / "test.csv"), "--k", "ten"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_simulate_command(tmp_path):
    assert main(["simulate", "--out", str(tmp_path / "sim"), "--users", "50", "--items", "300", "--days", "3",
                 "--quiet"]) == 0
    assert (tmp_path / "sim" / "interactions.parquet").exists()
    assert (tmp_path / "sim" / "simulator.json").exists()

"""A new user's first hour: the README's tour on a file of one's own, and bad input.

The tour runs as the README writes it (``split``, ``fit`` with the default config,
``evaluate``, ``recommend``, ``serve`` with a relative model path and one
``/recommend``), on 60 users x 20 items with the user's own column names.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import warnings

import httpx
import numpy as np
import pandas as pd
import pytest

from recfunnel.cli import main
from recfunnel.storage.artifacts import _process_umask


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _own_file(path, n_users=60, n_items=20, seed=0) -> pd.DataFrame:
    """customer,product,purchased_at with dates: no column name recfunnel knows."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 2  # two tastes: even users buy even products
        pool = np.arange(group, n_items, 2)
        for j, i in enumerate(rng.choice(pool, size=rng.integers(5, 9), replace=False)):
            rows.append((f"cust-{u:03d}", f"prod-{i:02d}", 1_600_000_000 + 86_400 * j + 60 * u))
    frame = pd.DataFrame(rows, columns=["customer", "product", "purchased_at"])
    frame["purchased_at"] = pd.to_datetime(frame["purchased_at"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
    frame.to_csv(path, index=False)
    return frame


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recfunnel.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """split and fit exactly as the README's tour, relative paths, in a fresh folder."""
    d = tmp_path_factory.mktemp("tour")
    _own_file(d / "purchases.csv")
    split = _cli("split", "--interactions", "purchases.csv", "--out", "data", "--user-col", "customer",
                 "--item-col", "product", "--time-col", "purchased_at", cwd=d)
    assert split.returncode == 0, split.stderr
    # the default config (DIEN ranker) on 60 users x 20 items: this crashed in the trainer's batching
    fit = _cli("fit", "--interactions", "data/train.csv", "--out", "runs/own", "--quiet", cwd=d)
    assert fit.returncode == 0, fit.stderr
    return d


def test_split_writes_train_and_test_with_the_canonical_columns(tour):
    train = pd.read_csv(tour / "data" / "train.csv", dtype={"user_id": str, "item_id": str})
    test = pd.read_csv(tour / "data" / "test.csv", dtype={"user_id": str, "item_id": str})
    own = pd.read_csv(tour / "purchases.csv")
    assert list(train.columns[:3]) == ["user_id", "item_id", "timestamp"]
    assert len(train) + len(test) == len(own)
    # user-time: every user keeps events in train, and each test event is newer than the user's training ones
    assert set(test["user_id"]) <= set(train["user_id"])
    newest_train = train.groupby("user_id")["timestamp"].max()
    assert (test["timestamp"].to_numpy() >= newest_train.loc[test["user_id"]].to_numpy()).all()
    assert 0.15 < len(test) / len(own) < 0.35
    mode = stat.S_IMODE(os.stat(tour / "data" / "train.csv").st_mode)
    assert mode == 0o666 & ~_process_umask(), oct(mode)  # not the temporary file's 0600


def test_the_default_funnel_fits_and_evaluates_on_60_users_and_20_items(tour):
    from recfunnel.pipeline.online.funnel import Funnel

    funnel = Funnel.load(tour / "runs" / "own")
    assert funnel.ranker is not None and funnel.config.ranker.kind == "neural"
    out = _cli("evaluate", "--model", "runs/own", "--test", "data/test.csv", "--k", "5,10", "--quiet", cwd=tour)
    assert out.returncode == 0, out.stderr
    assert "| 10 |" in out.stdout
    import json
    metrics = json.loads((tour / "runs" / "own.evaluation.json").read_text())["metrics"]
    # two tastes of 10 products each: the funnel must do far better than chance (recall@10 ~ 0.5 at best blind)
    assert metrics["recall@10"] > 0.6


def test_evaluating_on_the_training_file_is_an_input_error(tour):
    out = _cli("evaluate", "--model", "runs/own", "--test", "data/train.csv", "--out", "x.json", cwd=tour)
    assert out.returncode == 2
    assert out.stderr.startswith("error: no test pair can be scored") and "recfunnel split" in out.stderr
    assert not (tour / "x.json").exists()


def test_recommend_to_a_folder_and_one_user_from_python(tour):
    (tour / "users.txt").write_text("cust-001\nnew-user\n")
    out = _cli("recommend", "--model", "runs/own", "--users-file", "users.txt", "--k", "3", "--out", "recs/",
               "--quiet", cwd=tour)
    assert out.returncode == 0, out.stderr
    recs = pd.read_csv(tour / "recs" / "recs.csv", dtype=str)
    assert recs.groupby("user_id").size().to_dict() == {"cust-001": 3, "new-user": 3}

    from recfunnel.pipeline.online.funnel import Funnel

    funnel = Funnel.load(tour / "runs" / "own")
    one = funnel.recommend("cust-001", k=3)
    assert one["user_id"].tolist() == ["cust-001"] * 3
    assert one["item_id"].tolist() == recs[recs.user_id == "cust-001"]["item_id"].tolist()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            funnel.recommend(["cust-001"], k=bad)


def test_serve_with_the_relative_model_path_answers(tour):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "recfunnel.cli", "serve", "--model", "runs/own", "--port",
                             str(port), "--events", "memory://", "--quiet"], cwd=tour, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, ready = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, (ready and ready.text, proc.poll())
        answer = httpx.post(f"http://127.0.0.1:{port}/recommend", json={"user_id": "cust-001", "k": 5}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["user_id"] == "cust-001" and len(body["items"]) == 5
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- bad input, one line and exit 2
def test_own_column_names_without_a_mapping_list_the_columns_found(tmp_path, capsys):
    _own_file(tmp_path / "own.csv")
    assert main(["fit", "--interactions", str(tmp_path / "own.csv"), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "columns found: ['customer', 'product', 'purchased_at']" in err and "--user-col" in err
    assert not (tmp_path / "m").exists()


def test_a_mapped_column_that_is_absent_is_named(tmp_path, capsys):
    _own_file(tmp_path / "own.csv")
    assert main(["split", "--interactions", str(tmp_path / "own.csv"), "--out", str(tmp_path / "d"),
                 "--user-col", "client", "--item-col", "product", "--time-col", "purchased_at"]) == 2
    err = capsys.readouterr().err
    assert "no column 'client' (user_id)" in err and "'customer'" in err


def test_the_config_file_names_the_columns_and_the_model_keeps_them(tmp_path):
    import json

    own = _own_file(tmp_path / "own.csv")
    config = {"user_col": "customer", "item_col": "product", "time_col": "purchased_at",
              "channels": [{"kind": "itemcf", "quota": 10}, {"kind": "popular", "quota": 10}],
              "ranker": None, "reranker": None, "retrieval_k": 10}
    (tmp_path / "c.json").write_text(json.dumps(config))
    position = own.groupby("customer").cumcount(ascending=False)
    own[position >= 1].to_csv(tmp_path / "train.csv", index=False)
    own[position < 1].to_csv(tmp_path / "test.csv", index=False)
    assert main(["fit", "--interactions", str(tmp_path / "train.csv"), "--config", str(tmp_path / "c.json"),
                 "--out", str(tmp_path / "m"), "--quiet"]) == 0
    # evaluate reads a test file of the same layout with the model's mapping, no flags needed
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--test", str(tmp_path / "test.csv"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "m.evaluation.json").read_text())
    assert metrics["counts"]["test_users"] == 60


def test_random_bytes_are_an_input_error(tmp_path, capsys):
    (tmp_path / "noise.csv").write_bytes(np.random.default_rng(0).bytes(4096))
    assert main(["fit", "--interactions", str(tmp_path / "noise.csv"), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_text_noise_without_nul_bytes_is_an_input_error(tmp_path, capsys):
    rng = np.random.default_rng(1)
    noise = bytes(b for b in rng.integers(1, 256, 8192, dtype=np.uint8).tobytes())
    (tmp_path / "noise.csv").write_bytes(noise)
    assert main(["fit", "--interactions", str(tmp_path / "noise.csv"), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_a_bad_timestamp_is_named_with_its_row(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("user_id,item_id,timestamp\nu1,i1,1.5\nu2,i2,[1]\nu3,i3,7\n")
    assert main(["fit", "--interactions", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'[1]' (data row 2)" in err and "1.5" not in err


def test_a_literal_nan_id_is_a_missing_id_with_a_one_line_warning(tmp_path, capsys):
    rows = "".join(f"u{u},i{(u + j) % 7},{1_600_000_000 + j}\n" for u in range(8) for j in range(4))
    (tmp_path / "t.csv").write_text("user_id,item_id,timestamp\nnan,i1,1600000000\nu1,NULL,1600000001\n" + rows)
    assert main(["split", "--interactions", str(tmp_path / "t.csv"), "--out", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "dropped 2 of 34 rows" in err
    assert "UserWarning" not in err and "cli.py" not in err
    both = pd.concat([pd.read_csv(tmp_path / "d" / f, dtype=str, keep_default_na=False)
                      for f in ("train.csv", "test.csv")])
    assert "nan" not in set(both["user_id"]) and "NULL" not in set(both["item_id"]) and len(both) == 32


def test_split_errors(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("user_id,item_id,timestamp\n" + "".join(f"u{u},i{u},0\n" for u in range(5)))
    assert main(["split", "--interactions", str(tmp_path / "t.csv"), "--out", str(tmp_path / "d")]) == 2
    assert "leaves no test events" in capsys.readouterr().err
    assert main(["split", "--interactions", str(tmp_path / "t.csv"), "--out", str(tmp_path / "d"),
                 "--by", "time"]) == 2
    assert "all timestamps are equal" in capsys.readouterr().err
    assert main(["split", "--interactions", str(tmp_path / "t.csv"), "--out", str(tmp_path / "d"),
                 "--test-frac", "1.5"]) == 2
    assert "(0, 1)" in capsys.readouterr().err


def test_constant_timestamps_split_by_file_order(tmp_path):
    from recfunnel.data.loaders import load_interactions
    from recfunnel.data.splits import split_interactions

    (tmp_path / "t.csv").write_text("user_id,item_id,timestamp\n" +
                                    "".join(f"u{u},i{j},0\n" for u in range(3) for j in range(5)))
    train, test = split_interactions(load_interactions(tmp_path / "t.csv"), "leave-last")
    assert sorted(test["item_id"]) == ["i4", "i4", "i4"]  # the last row of each user is its newest event
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, test = split_interactions(load_interactions(tmp_path / "t.csv"), "user-time", 0.4)
    assert test.groupby("user_id")["item_id"].apply(sorted).to_dict() == {u: ["i3", "i4"] for u in ("u0", "u1", "u2")}


def test_outputs_to_a_folder_and_bad_output_paths(tour, capsys):
    model = str(tour / "runs" / "own")
    test = str(tour / "data" / "test.csv")
    (tour / "reports").mkdir()
    assert main(["evaluate", "--model", model, "--test", test, "--report", str(tour / "reports"),
                 "--out", str(tour / "reports") + "/", "--quiet"]) == 0
    assert (tour / "reports" / "report.html").is_file() and (tour / "reports" / "evaluation.json").is_file()
    capsys.readouterr()
    # a file where a folder should be: one line, exit 2, before any work is done
    assert main(["evaluate", "--model", model, "--test", test, "--report", str(tour / "purchases.csv") + "/r.html",
                 "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "is a file" in captured.err and captured.out == ""


def test_a_binary_users_file_is_an_input_error(tour, capsys):
    (tour / "users.bin").write_bytes(b"\xff\xfe\x00junk\n")
    assert main(["recommend", "--model", str(tour / "runs" / "own"), "--users-file", str(tour / "users.bin"),
                 "--out", str(tour / "r.csv"), "--quiet"]) == 2
    assert "binary data" in capsys.readouterr().err


def test_evaluate_reads_categories_from_an_item_table(tour):
    import json

    pd.DataFrame({"item_id": [f"prod-{i:02d}" for i in range(20)],
                  "genres": [f"g{i % 4}|x" for i in range(20)]}).to_csv(tour / "items.csv", index=False)
    out = _cli("evaluate", "--model", "runs/own", "--test", "data/test.csv", "--items", "items.csv", "--out",
               "cat.json", "--report", "cat.html", "--quiet", cwd=tour)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tour / "cat.json").read_text())["metrics"]
    assert 0.0 < metrics["diversity_category@10"] <= 1.0
    html = (tour / "cat.html").read_text()
    section = html[html.index('id="categories"'):]
    assert "no category data" not in section[:2000] and "categories in the catalogue" in section
    bad = _cli("evaluate", "--model", "runs/own", "--test", "data/test.csv", "--items", "items.csv",
               "--category-col", "colour", "--quiet", cwd=tour)
    assert bad.returncode == 2 and "no item column 'colour'" in bad.stderr


def test_the_id_column_of_user_and_item_tables_follows_the_mapping(tmp_path):
    from recfunnel.data.loaders import load_items, load_users

    (tmp_path / "products.csv").write_text("product,colour\np1,red\np2,blue\n")
    assert load_items(tmp_path / "products.csv", "product")["colour"].to_dict() == {"p1": "red", "p2": "blue"}
    (tmp_path / "users.csv").write_text("user_id,age\nu1,30\n")  # the usual name still works
    assert load_users(tmp_path / "users.csv", "customer").index.tolist() == ["u1"]

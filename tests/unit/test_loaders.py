from __future__ import annotations

import io
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recfunnel.data.grouplens import download_movielens
from recfunnel.data.loaders import load_interactions, load_items, load_users, read_id_list
from recfunnel.errors import DataError

ML100K = Path("/work/shared/data/ml-100k")


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def assert_interaction_contract(df: pd.DataFrame) -> None:
    assert list(df.columns[:3]) == ["user_id", "item_id", "timestamp"]
    assert df["user_id"].dtype == object and df["item_id"].dtype == object
    assert all(isinstance(v, str) for v in df["user_id"]) and all(isinstance(v, str) for v in df["item_id"])
    assert df["timestamp"].dtype == np.int64
    assert isinstance(df.index, pd.RangeIndex)


def assert_one_line_error(excinfo: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message, message


# ----------------------------------------------------------------------------- interaction formats


def test_recbole_inter(tmp_path):
    path = write(
        tmp_path / "x.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\tsession:token\titems:token_seq\n"
        "196\t242\t3\t881250949.7\t007\ta b\n"
        "186\t302\t5\t891717742\t008\t\n",
    )
    df = load_interactions(path)
    assert_interaction_contract(df)
    assert df["user_id"].tolist() == ["196", "186"]
    assert df["timestamp"].tolist() == [881250949, 891717742]  # floats truncated
    assert df["rating"].dtype == np.float64
    assert df["session"].tolist() == ["007", "008"]  # a token stays str even when numeric
    assert df["items"].tolist() == [("a", "b"), ()]


def test_grouplens_u_data_headerless_tab(tmp_path):
    path = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    df = load_interactions(path)
    assert_interaction_contract(df)
    assert df.columns.tolist() == ["user_id", "item_id", "timestamp", "rating"]
    assert df["rating"].tolist() == [3.0, 3.0]


def test_ml_1m_ratings_dat(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    df = load_interactions(path)
    assert df["item_id"].tolist() == ["1193", "661"]
    assert df["timestamp"].tolist() == [978300760, 978302109]


@pytest.mark.parametrize("sep", [",", "\t", ";", "|"])
def test_delimited_with_header(tmp_path, sep):
    rows = [["userId", "movieId", "rating", "timestamp", "event", "price"],
            ["u1", "i1", "4.5", "10", "view", "1.5"],
            ["u2", "i2", "3", "20", "buy", "2"]]
    path = write(tmp_path / "data.txt", "\n".join(sep.join(r) for r in rows) + "\n")
    df = load_interactions(path)
    assert_interaction_contract(df)
    assert df.columns.tolist() == ["user_id", "item_id", "timestamp", "rating", "event", "price"]
    assert df["event"].tolist() == ["view", "buy"]
    assert df["price"].dtype == np.float64


def test_csv_with_quoted_commas_and_other_str_column(tmp_path):
    path = write(tmp_path / "r.csv", 'user_id,item_id,timestamp,note\n1,2,5,"a, b"\n1,3,6,\n')
    df = load_interactions(path)
    assert df["note"].tolist() == ["a, b", None]


def test_headerless_three_columns_with_epoch_timestamps(tmp_path):
    path = write(tmp_path / "r.csv", "u1,i1,1500000000\nu2,i2,1500000100\n")
    df = load_interactions(path)
    assert df.columns.tolist() == ["user_id", "item_id", "timestamp"]


def test_headerless_ambiguous_is_an_error(tmp_path):
    three = write(tmp_path / "three.csv", "u1,i1,5\nu2,i2,3\n")  # rating or timestamp?
    with pytest.raises(DataError) as excinfo:
        load_interactions(three)
    assert_one_line_error(excinfo, three, "header")
    five = write(tmp_path / "five.csv", "1,2,3,pv,1511544070\n1,4,3,pv,1511544071\n")
    with pytest.raises(DataError) as excinfo:
        load_interactions(five)
    assert_one_line_error(excinfo, five, "5 columns")


def test_parquet_detected_by_magic_bytes_and_directory(tmp_path):
    table = pa.table({"user": [1, 2], "item_id": ["a", "b"], "ts": [10.9, 20.0], "clicked": [True, False]})
    path = tmp_path / "events.csv"  # the extension lies; the PAR1 magic decides
    pq.write_table(table, path)
    df = load_interactions(path)
    assert_interaction_contract(df)
    assert df["user_id"].tolist() == ["1", "2"]
    assert df["timestamp"].tolist() == [10, 20]
    assert df["label"].tolist() == [1, 0] and df["label"].dtype == np.int64

    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(table.slice(0, 1), folder / "part-0.parquet")
    pq.write_table(table.slice(1, 1), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_text("")
    assert load_interactions(folder)["user_id"].tolist() == ["1", "2"]


def test_parquet_datetime_column(tmp_path):
    stamps = pd.to_datetime(["1970-01-01 00:00:10", "1970-01-02 00:00:00"])
    pq.write_table(pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"], "event_time": stamps}),
                   tmp_path / "p.parquet")
    assert load_interactions(tmp_path / "p.parquet")["timestamp"].tolist() == [10, 86400]


@pytest.mark.parametrize(
    ("user", "item", "time"),
    [("userId", "movieId", "ts"), ("UID", "IID", "Time"), ("visitorid", "product_id", "unix_time"),
     ("customer_id", "article_id", "event_time"), ("user", "track_id", "timestamp"),
     ("USER_ID", "itemId", "time")],
)
def test_column_aliases(tmp_path, user, item, time):
    path = write(tmp_path / "a.csv", f"{user},{item},{time}\nu,i,7\n")
    df = load_interactions(path)
    assert df.columns.tolist() == ["user_id", "item_id", "timestamp"]


@pytest.mark.parametrize("label", ["click", "clicked", "is_click", "Label"])
@pytest.mark.parametrize("weight", ["count", "plays", "play_count", "quantity"])
def test_label_and_weight_aliases(tmp_path, label, weight):
    path = write(tmp_path / "a.csv", f"user_id,item_id,timestamp,{label},{weight}\nu,i,1,1,3\nu,j,2,0,4\n")
    df = load_interactions(path)
    assert df["label"].tolist() == [1, 0] and df["weight"].tolist() == [3.0, 4.0]


def test_label_accepts_booleans_and_rejects_other_values(tmp_path):
    ok = write(tmp_path / "ok.csv", "user_id,item_id,timestamp,label\nu,i,1,True\nu,j,2,false\nu,k,3,1.0\n")
    assert load_interactions(ok)["label"].tolist() == [1, 0, 1]
    bad = write(tmp_path / "bad.csv", "user_id,item_id,timestamp,label\nu,i,1,2\n")
    with pytest.raises(DataError) as excinfo:
        load_interactions(bad)
    assert_one_line_error(excinfo, bad, "label", "0/1")


def test_datetime_strings_become_unix_seconds(tmp_path):
    path = write(
        tmp_path / "d.csv",
        "user_id,item_id,date\nu,i,1970-01-01 00:01:40\nu,j,2019-11-24 00:00:34.762830+00:00\n",
    )
    assert load_interactions(path)["timestamp"].tolist() == [100, 1574553634]


def test_unparseable_timestamp_is_an_error(tmp_path):
    path = write(tmp_path / "t.csv", "user_id,item_id,timestamp\nu,i,yesterday\n")
    with pytest.raises(DataError) as excinfo:
        load_interactions(path)
    assert_one_line_error(excinfo, path, "timestamp", "yesterday")


def test_missing_timestamp_column(tmp_path):
    path = write(tmp_path / "t.csv", "user_id,item_id,rating\nu,i,4\nv,i,5\n")
    with pytest.raises(DataError) as excinfo:
        load_interactions(path)
    assert_one_line_error(excinfo, path, "timestamp", "columns found", "'rating'")
    df = load_interactions(path, require_timestamp=False)
    assert df["timestamp"].tolist() == [0, 0] and df["timestamp"].dtype == np.int64


def test_missing_ids_are_dropped_with_a_warning(tmp_path):
    path = write(tmp_path / "m.csv", "user_id,item_id,timestamp\nu,i,1\n,i,2\nv, ,3\nw,k,\n")
    with pytest.warns(UserWarning, match="dropped 3 of 4 rows"):
        df = load_interactions(path)
    assert df["user_id"].tolist() == ["u"]


def test_all_ids_missing_is_an_error(tmp_path):
    path = write(tmp_path / "m.csv", "user_id,item_id,timestamp\n,i,1\n,j,2\n")
    with pytest.raises(DataError) as excinfo:
        load_interactions(path)
    assert_one_line_error(excinfo, path, "missing")


@pytest.mark.parametrize(
    ("content", "words"),
    [(None, ["not found"]), ("", ["empty file"]), ("\n \n", ["empty file"]),
     ("user_id,item_id,timestamp\n", ["no rows"]),
     ("item_id,timestamp\ni,1\n", ["user_id", "columns found", "'item_id'"]),
     ("user_id,item_id,timestamp,rating\nu,i,1,good\n", ["rating", "numeric", "good"]),
     ("user_id,item_id,timestamp\nu,i,1\nu,i,2,3\n", ["cannot parse"])],
)
def test_errors_are_one_line_data_errors(tmp_path, content, words):
    path = tmp_path / "bad.csv"
    if content is not None:
        write(path, content)
    with pytest.raises(DataError) as excinfo:
        load_interactions(path)
    assert_one_line_error(excinfo, path, *words)


def test_bad_parquet_is_a_data_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(DataError) as excinfo:
        load_interactions(path)
    assert_one_line_error(excinfo, path, "Parquet")
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    with pytest.raises(DataError) as excinfo:
        load_interactions(empty_dir)
    assert_one_line_error(excinfo, empty_dir, "no Parquet")


# ----------------------------------------------------------------------------- users and items


def test_recbole_user_and_item(tmp_path):
    users = write(
        tmp_path / "x.user",
        "user_id:token\tage:token\tgender:token\tzip_code:token\n1\t24\tM\t01234\n2\t53\tF\tT8H1N\n",
    )
    df = load_users(users)
    assert df.index.name == "user_id" and df.index.tolist() == ["1", "2"]
    assert df["age"].tolist() == [24.0, 53.0]  # named age: a quantity
    assert df["zip_code"].tolist() == ["01234", "T8H1N"]  # a token stays str

    more = "".join(f"{100 + k}\tFilm {k}\t{1950 + k}\tDrama\n" for k in range(20))
    items = write(
        tmp_path / "x.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "267\tunkonwn\tunkonwn\t\n" + more,
    )
    df = load_items(items)
    assert df["movie_title"].tolist()[:2] == ["Toy Story", "unkonwn"]  # free text stays a str
    assert df["class"].tolist()[:3] == [("Animation", "Children's", "Comedy"), (), ("Drama",)]
    # a year column where >= 95% parse is numeric; the stray marker becomes NaN
    assert df["release_year"].dtype == np.float64
    assert df["release_year"].iloc[0] == 1995.0 and np.isnan(df["release_year"].iloc[1])
    few = write(tmp_path / "few.item", "item_id:token\trelease_year:token\n1\t1995\n2\tunkonwn\n")
    assert load_items(few)["release_year"].tolist() == ["1995", "unkonwn"]


def test_grouplens_u_user_and_u_item(tmp_path):
    users = write(tmp_path / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    df = load_users(users)
    assert df.columns.tolist() == ["age", "gender", "occupation", "zip_code"]
    assert df.loc["2", "occupation"] == "other" and df["age"].dtype == np.float64

    flags = ["0"] * 19
    flags[3] = flags[5] = "1"  # Animation, Comedy
    line1 = "|".join(["1", "Toy Story (1995)", "01-Jan-1995", "", "http://imdb/x"] + flags)
    line2 = "|".join(["2", "Café, The (1994)", "", "", ""] + ["0"] * 19)
    items = write(tmp_path / "u.item", line1 + "\n" + line2 + "\n", encoding="latin-1")
    df = load_items(items)
    assert df.columns.tolist() == ["title", "release_year", "genres"]
    assert df.loc["1", "genres"] == ("Animation", "Comedy") and df.loc["2", "genres"] == ()
    assert df.loc["2", "title"] == "Café, The (1994)"
    assert df.loc["1", "release_year"] == 1995.0 and np.isnan(df.loc["2", "release_year"])


def test_ml_1m_users_and_movies(tmp_path):
    users = write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    df = load_users(users)
    assert df.loc["2"].tolist() == ["M", 56.0, "16", "70072"]
    movies = write(tmp_path / "movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n"
                   "2::Jumanji (1995)::Adventure\n")
    df = load_items(movies)
    assert df.loc["1", "genres"] == ("Animation", "Children's", "Comedy")
    assert df.loc["2", "genres"] == ("Adventure",) and df.loc["2", "release_year"] == 1995.0


def test_generic_items_csv_multi_value_and_free_text(tmp_path):
    path = write(
        tmp_path / "movies.csv",
        'movieId,title,genres,tags,colour,score\n'
        '1,"Toy Story | Director\'s cut, The",Adventure|Animation,a|b,red,1.5\n'
        '2,Jumanji,Adventure,c|d,blue,\n'
        '3,Heat,,e|f,,2\n',
    )
    df = load_items(path)
    assert df.index.name == "item_id" and df.index.tolist() == ["1", "2", "3"]
    assert df["title"].iloc[0] == "Toy Story | Director's cut, The"  # free text: never split
    assert df["genres"].tolist() == [("Adventure", "Animation"), ("Adventure",), ()]
    assert df["tags"].tolist() == [("a", "b"), ("c", "d"), ("e", "f")]
    assert df["colour"].tolist() == ["red", "blue", None]
    assert df["score"].dtype == np.float64 and np.isnan(df["score"].iloc[1])


def test_parquet_items_with_list_column_and_id_alias(tmp_path):
    table = pa.table({"id": [10, 11], "tags": [["x", "y"], []], "price": [1, 2]})
    pq.write_table(table, tmp_path / "items.parquet")
    df = load_items(tmp_path / "items.parquet")
    assert df.index.tolist() == ["10", "11"]
    assert df["tags"].tolist() == [("x", "y"), ()]
    assert df["price"].dtype == np.float64


def test_users_errors(tmp_path):
    no_id = write(tmp_path / "users.csv", "age,gender\n3,F\n")
    with pytest.raises(DataError) as excinfo:
        load_users(no_id)
    assert_one_line_error(excinfo, no_id, "user_id", "columns found", "'age'")
    headerless = write(tmp_path / "users.txt", "a,b,c\nd,e,f\n")
    with pytest.raises(DataError) as excinfo:
        load_users(headerless)
    assert_one_line_error(excinfo, headerless, "header")


def test_users_missing_ids_dropped(tmp_path):
    path = write(tmp_path / "users.csv", "user_id,age\n1,3\n,4\n")
    with pytest.warns(UserWarning, match="dropped 1"):
        assert load_users(path).index.tolist() == ["1"]


def test_read_id_list(tmp_path):
    path = write(tmp_path / "ids.txt", "user_id\n 7 \n\n42\n7\n")
    assert read_id_list(path) == ["7", "42", "7"]
    assert read_id_list(write(tmp_path / "plain.txt", "a\nb")) == ["a", "b"]
    blank = write(tmp_path / "blank.txt", "user_id\n\n")
    with pytest.raises(DataError) as excinfo:
        read_id_list(blank)
    assert_one_line_error(excinfo, blank, "no user ids")
    with pytest.raises(DataError):
        read_id_list(tmp_path / "absent.txt")


@pytest.mark.skipif(not (ML100K / "ml-100k.inter").exists(), reason="shared ml-100k data not present")
def test_real_ml_100k():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inter = load_interactions(ML100K / "ml-100k.inter")
        users = load_users(ML100K / "ml-100k.user")
        items = load_items(ML100K / "ml-100k.item")
    assert_interaction_contract(inter)
    assert len(inter) == 100_000
    assert inter["user_id"].nunique() == 943 and inter["item_id"].nunique() == 1682
    assert len(users) == 943 and len(items) == 1682
    assert set(inter["user_id"]) == set(users.index) and set(inter["item_id"]) == set(items.index)
    assert items["class"].map(len).max() >= 2
    assert items["release_year"].dtype == np.float64


# ----------------------------------------------------------------------------- downloads


def test_download_without_network_gives_a_helpful_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(DataError) as excinfo:
        download_movielens("ml-100k", tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "could not download ml-100k" in message and "(no network?)" in message
    assert "https://grouplens.org/datasets/movielens/" in message and "--interactions path/to/u.data" in message


def test_download_extracts_archive(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-100k/u.data", "1\t2\t3\t881250949\n")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(buffer.getvalue()))
    folder = download_movielens("ml-100k", tmp_path / "data")
    assert folder == tmp_path / "data" / "ml-100k"
    assert len(load_interactions(folder / "u.data")) == 1
    # second call reuses the folder without touching the network
    monkeypatch.setattr(urllib.request, "urlopen", None)
    assert download_movielens("ml-100k", tmp_path / "data") == folder


def test_download_rejects_unknown_names_and_zip_slip(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown MovieLens"):
        download_movielens("ml-20m", tmp_path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../evil.txt", "x")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(buffer.getvalue()))
    with pytest.raises(DataError, match="outside"):
        download_movielens("ml-1m", tmp_path / "d")
    assert not (tmp_path / "evil.txt").exists()


def test_loaded_tables_round_trip_through_parquet(tmp_path):
    path = write(tmp_path / "items.csv", "item_id,genres,price,brand\n1,a|b,2.5,x\n2,,3,\n")
    items = load_items(path)
    items.to_parquet(tmp_path / "items.parquet")
    again = load_items(tmp_path / "items.parquet")
    assert again.index.name == "item_id" and again.index.tolist() == ["1", "2"]
    assert again["genres"].tolist() == [("a", "b"), ()]
    assert again["brand"].tolist() == ["x", None] and again["price"].tolist() == [2.5, 3.0]

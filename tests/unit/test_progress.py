"""Progress bars reach the trainers inside a funnel fit, and only inside it."""

import threading

from recfunnel.config import config_from_dict
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.testing.synthetic import make_planted_data
from recfunnel.training.progress import progress_enabled, show_progress

CONFIG = {
    "channels": [{"kind": "item2vec", "quota": 10, "params": {"epochs": 1}},
                 {"kind": "bpr", "quota": 10, "params": {"iterations": 3, "num_threads": 1}}],
    "ranker": {"kind": "neural", "params": {"model": "fm", "trainer": {"epochs": 2, "min_steps_per_epoch": 0}}},
    "reranker": None, "retrieval_k": 20, "rank_k": 10,
}


def test_a_fit_with_progress_shows_every_trainer(capsys):
    fit_funnel(make_planted_data(), config_from_dict(CONFIG), progress=True)
    err = capsys.readouterr().err
    assert "fit:" in err and "skip-gram" in err  # the outer bar and the embedding channel's trainer
    assert "epoch 1/2" in err and "valid gauc" in err  # the ranker's epochs, with their validation metric
    assert "100%" in err and "3/3" in err  # implicit's BPR iterations
    assert not progress_enabled()  # the setting ends with the fit


def test_a_quiet_fit_prints_no_bar(capsys):
    fit_funnel(make_planted_data(), config_from_dict(CONFIG), progress=False)
    assert capsys.readouterr().err == ""


def test_the_setting_is_scoped_to_its_thread():
    seen = []
    with show_progress(True):
        worker = threading.Thread(target=lambda: seen.append(progress_enabled()))
        worker.start()
        worker.join()
        assert progress_enabled()
    assert seen == [False]

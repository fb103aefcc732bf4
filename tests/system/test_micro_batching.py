"""Micro-batching: requests run together score exactly as they do alone."""

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from recfunnel.config import config_from_dict
from recfunnel.pipeline.offline.fit import fit_funnel
from recfunnel.pipeline.online.batching import MicroBatcher
from recfunnel.serving.app import create_app
from recfunnel.serving.settings import ServingSettings
from recfunnel.testing.synthetic import make_planted_data

RANKERS = {
    "lightgbm": {"kind": "lightgbm", "params": {"n_estimators": 20, "min_child_samples": 5, "num_threads": 1}},
    "deepfm": {"kind": "neural", "params": {"model": "deepfm", "trainer": {"epochs": 1, "min_steps_per_epoch": 5}}},
}


@pytest.fixture(scope="module", params=sorted(RANKERS))
def service(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    data = make_planted_data(n_users_per_group=20, n_groups=3, items_per_group=20, seed=4)
    cfg = config_from_dict({"channels": [{"kind": "itemcf", "quota": 30}, {"kind": "popular", "quota": 20}],
                            "ranker": RANKERS[request.param], "reranker": {"kind": "mmr"},
                            "retrieval_k": 40, "rank_k": 30, "history_length": 20})
    fit_funnel(data, cfg, progress=False).save(root / "v1")
    service = create_app(ServingSettings(model_dir=root / "v1", events_url="memory://",
                                         budget_ms=30_000, channel_timeout_ms=10_000,
                                         stage_timeout_ms=10_000)).state.service
    yield service
    service.close()


def _body(user, k=10, exclude=(), context=None):
    return SimpleNamespace(user_id=user, k=k, exclude=list(exclude), context=context or {}, debug=True)


def test_a_batch_answers_each_request_as_it_is_answered_alone(service):
    bodies = [_body("u00001"), _body("u00025", k=5), _body("u00050", exclude=["i00041", "i00042"]),
              _body("stranger", k=7), _body("u00003", context={"device": "ios"}), _body("u00001", k=3)]
    now = time.perf_counter()
    together = service._recommend_batch([(b, now) for b in bodies])
    for body, batched in zip(bodies, together, strict=True):
        alone = service._recommend_batch([(body, time.perf_counter())])[0]
        assert [i["item_id"] for i in batched["items"]] == [i["item_id"] for i in alone["items"]]
        np.testing.assert_allclose([i["score"] for i in batched["items"]], [i["score"] for i in alone["items"]],
                                   rtol=1e-5, atol=1e-6)
        assert len(batched["items"]) == body.k and batched["user_id"] == body.user_id
        assert not set(body.exclude) & {i["item_id"] for i in batched["items"]}
        # every stage keeps the same candidates, up to the re-ranker, which ran for the batch's largest k
        assert [(t["stage"], t["n_out"]) for t in batched["trace"][:-1]] == \
            [(t["stage"], t["n_out"]) for t in alone["trace"][:-1]]


def test_concurrent_requests_share_batches_and_get_their_own_answers(service):
    answers, lock = {}, threading.Lock()

    def call(user):
        out = service.recommend(_body(user, k=5, context={}), time.perf_counter())
        with lock:
            answers[user] = out

    batches_before, items_before = service.batcher.batches, service.batcher.items
    users = [f"u{i:05d}" for i in range(1, 41)]
    threads = [threading.Thread(target=call, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers) == users and all(answers[u]["user_id"] == u for u in users)
    batches = service.batcher.batches - batches_before
    assert (service.batcher.items - items_before) == 40 and batches < 40  # some requests ran together
    for u in users[:5]:
        alone = service._recommend_batch([(_body(u, k=5), time.perf_counter())])[0]
        assert [i["item_id"] for i in answers[u]["items"]] == [i["item_id"] for i in alone["items"]]


def test_the_batcher_takes_what_queued_and_reports_errors_to_each_caller():
    started, release = threading.Event(), threading.Event()
    sizes = []

    def process(items):
        sizes.append(len(items))
        started.set()
        release.wait(10)
        return [ValueError(f"bad {x}") if x < 0 else x + 1 for x in items]

    batcher = MicroBatcher(process, max_batch=4)
    results, lock = {}, threading.Lock()

    def call(x):
        try:
            out = batcher.submit(x)
        except ValueError as e:
            out = str(e)
        with lock:
            results[x] = out

    first = threading.Thread(target=call, args=(0,))
    first.start()
    started.wait(10)  # the first batch runs; the next five queue behind it
    rest = [threading.Thread(target=call, args=(x,)) for x in (1, 2, -3, 4, 5)]
    for t in rest:
        t.start()
    time.sleep(0.2)
    release.set()
    for t in [first, *rest]:
        t.join(10)
    batcher.close()
    assert sizes == [1, 4, 1]  # then at most max_batch at a time
    assert results == {0: 1, 1: 2, 2: 3, -3: "bad -3", 4: 5, 5: 6}

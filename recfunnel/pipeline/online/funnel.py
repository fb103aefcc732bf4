"""The Funnel: retrieval channels -> merge -> (pre-rank) -> rank -> re-rank.

One object serves the offline path (batch recommendation, evaluation, the
ranker's training candidates) and the online path (a request of one user):
both call :meth:`Funnel.run` on a :class:`~recfunnel.types.RequestBatch`, the only
place that runs the stages in order. How each stage runs (inline, or under a
timeout with a fallback) is the :class:`~recfunnel.pipeline.online.runners.StageRunner`
passed to it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recfunnel.config import FunnelConfig, StageSpec, config_from_dict, config_to_dict
from recfunnel.config.registry import stage_class
from recfunnel.data.interactions import IdMap, Interactions
from recfunnel.pipeline.online.runners import PlainRunner, StageRunner
from recfunnel.stages.base import Ranker, ReRanker, Retriever
from recfunnel.stages.recall.merge import merge_candidates
from recfunnel.storage.artifacts import ArtifactReader, ArtifactWriter
from recfunnel.storage.user_history import UserHistoryStore
from recfunnel.types import Candidates, RequestBatch, StageTrace, top_k_columns

ARTIFACT_KIND = "recfunnel.funnel"


_PLAIN = PlainRunner()


def _as_id_list(user_ids: Sequence[str] | str) -> list[str]:
    """A list of ids; one id given as a string (or bytes) is one user, not its characters."""
    if isinstance(user_ids, str | bytes):
        return [user_ids.decode() if isinstance(user_ids, bytes) else user_ids]
    return list(user_ids)


class Funnel:
    """A fitted funnel (see :func:`recfunnel.pipeline.offline.fit.fit_funnel`)."""

    def __init__(
        self,
        config: FunnelConfig,
        user_ids: IdMap,
        item_ids: IdMap,
        history: UserHistoryStore,
        channels: Sequence[Retriever],
        fallback: Retriever,
        ranker: Ranker | None = None,
        reranker: ReRanker | None = None,
    ):
        self.config = config
        self.user_ids = user_ids
        self.item_ids = item_ids
        self.history = history
        self.channels = list(channels)
        self.fallback = fallback
        self.ranker = ranker
        self.reranker = reranker

    # --------------------------------------------------------------- serving
    def request(self, user_ids: Sequence[str] | str, *, time: np.ndarray | int | None = None,
                exclude_seen: bool = True) -> RequestBatch:
        """Request batch for external user ids (unknown users get an empty history).

        A single id may be given as a plain string.
        """
        user_ids = _as_id_list(user_ids)
        return self.history.request(self.user_ids.index(np.asarray(user_ids, dtype=object)), time=time,
                                    history_length=self.config.history_length, exclude_seen=exclude_seen)

    def retrieve(self, request: RequestBatch, *, trace: bool = False) -> tuple[Candidates, list[StageTrace]]:
        """All channels, merged with quotas and filled from the fallback (inline)."""
        traces: list[StageTrace] = []
        merged = self._retrieve(request, _PLAIN, traces)
        return merged, traces if trace else []

    def _retrieve(self, request: RequestBatch, runner: StageRunner, traces: list[StageTrace]) -> Candidates:
        """Channels then merge through ``runner``; appends their traces to ``traces``."""
        start = time.perf_counter()
        channel_traces = runner.channels(request, [(channel, spec.quota) for spec, channel
                                                   in zip(self.config.channels, self.channels, strict=True)])
        traces += channel_traces
        outputs = {channel.name: t.candidates for channel, t in zip(self.channels, channel_traces, strict=True)
                   if t.candidates is not None}
        fallback, fallback_trace = runner.fallback(
            request, lambda: self.fallback.retrieve(request, self.config.retrieval_k))
        if fallback_trace is not None:
            traces.append(fallback_trace)
        merged = self.merge(request, outputs, fallback)
        zeros = np.zeros(len(request), np.int64)
        traces.append(StageTrace("retrieval", zeros, merged.valid.sum(axis=1).astype(np.int64),
                                 time.perf_counter() - start, merged))
        return merged

    # The steps after the channels, one method each, which :meth:`run` hands to its runner.
    def merge(self, request: RequestBatch, outputs: Mapping[str, Candidates],
              fallback: Candidates | None = None) -> Candidates:
        """Merge channel outputs (all channels or any subset, by channel name) with their
        quotas, filled from the fallback (computed here unless ``fallback`` is given)."""
        cfg = self.config
        quota_of = {channel.name: spec.quota for spec, channel in zip(cfg.channels, self.channels, strict=True)}
        quotas = {name: quota_of[name] for name in outputs}
        if fallback is None:
            fallback = self.fallback.retrieve(request, cfg.retrieval_k)
        return merge_candidates(outputs, quotas, cfg.retrieval_k, fallback=fallback)

    def rank(self, request: RequestBatch, candidates: Candidates, k: int) -> Candidates:
        """The ranking stage (the candidates unchanged when the funnel has no ranker)."""
        if self.ranker is None:
            return candidates
        return self.ranker.rank(request, candidates, max(self.config.rank_k, k))

    def rerank(self, request: RequestBatch, candidates: Candidates, k: int) -> Candidates:
        """The re-ranking stage, or the best ``k`` when the funnel has no re-ranker."""
        if self.reranker is None:
            return candidates.take(top_k_columns(candidates.score, k))
        return self.reranker.rerank(request, candidates, k)

    def run(self, request: RequestBatch, k: int, *, trace: bool = False,
            runner: StageRunner | None = None) -> tuple[Candidates, list[StageTrace]]:
        """The whole funnel for a batch: up to ``k`` items per user, best first.

        Args:
            request: the batch of B users.
            k: items per user.
            trace: return the trace of every channel and stage (else an empty list).
            runner: how each stage runs; the default
                (:class:`~recfunnel.pipeline.online.runners.PlainRunner`) runs them inline
                and lets an exception propagate. The service passes a
                :class:`~recfunnel.pipeline.online.runners.BudgetedRun`.

        Returns:
            (B, <=k) candidates and the traces, in stage order.
        """
        runner = _PLAIN if runner is None else runner
        traces: list[StageTrace] = []
        candidates = self._retrieve(request, runner, traces)
        if self.ranker is not None:
            candidates, stage_trace = runner.stage("rank", self.ranker,
                                                   lambda c: self.rank(request, c, k), candidates)
            traces.append(stage_trace)
        if self.reranker is not None:
            candidates, stage_trace = runner.stage("rerank", self.reranker,
                                                   lambda c: self.rerank(request, c, k), candidates)
            traces.append(stage_trace)
        if self.reranker is None or candidates.item_index.shape[1] > k:  # no re-ranker, or it was skipped
            candidates = candidates.take(top_k_columns(candidates.score, k))
        runner.finish(candidates, traces, min(k, self.config.retrieval_k))
        return candidates, traces if trace else []

    def recommend(self, user_ids: Sequence[str] | str, k: int, *, batch_size: int = 512,
                  progress: bool = False) -> pd.DataFrame:
        """Top-``k`` items for external user ids as a frame ``user_id,item_id,rank,score``.

        Items each user had in the training interactions are excluded; unknown users
        get the cold-start fallback (popular items), never an error. ``user_ids`` may be
        one id as a string (``funnel.recommend("u1", k=10)``).

        Raises:
            ValueError: when ``k`` is not a positive integer.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        user_ids = _as_id_list(user_ids)
        frames = []
        bar = tqdm(total=len(user_ids), desc="recommend", unit="user", disable=not progress)
        for start in range(0, len(user_ids), batch_size):
            chunk = user_ids[start:start + batch_size]
            out, _ = self.run(self.request(chunk), k)
            frames.append(self.to_frame(chunk, out))
            bar.update(len(chunk))
        bar.close()
        if not frames:
            return pd.DataFrame({"user_id": [], "item_id": [], "rank": [], "score": []})
        return pd.concat(frames, ignore_index=True)

    def to_frame(self, user_ids: Sequence[str], candidates: Candidates) -> pd.DataFrame:
        rows, cols = np.nonzero(candidates.valid)
        return pd.DataFrame({
            "user_id": np.asarray(user_ids, dtype=object)[rows],
            "item_id": self.item_ids.to_ids(candidates.item_index[rows, cols]),
            "rank": cols + 1,
            "score": candidates.score[rows, cols].astype(np.float64),
        })

    # ----------------------------------------------------------- persistence
    def stages(self) -> list[tuple[StageSpec, object]]:
        out: list[tuple[StageSpec, object]] = list(zip(self.config.channels, self.channels, strict=True))
        out.append((self.config.fallback, self.fallback))
        if self.ranker is not None:
            out.append((self.config.ranker, self.ranker))
        if self.reranker is not None:
            out.append((self.config.reranker, self.reranker))
        return out

    def save(self, out_dir: str | Path, metadata: dict | None = None) -> Path:
        """Write the funnel atomically to ``out_dir`` (replacing an older model there)."""
        with ArtifactWriter(out_dir, ARTIFACT_KIND, metadata) as writer:
            writer.write_json("config.json", config_to_dict(self.config))
            writer.write_arrays("ids.npz", {"user_ids": self.user_ids.ids.astype(str),
                                            "item_ids": self.item_ids.ids.astype(str)})
            h = self.history
            writer.write_arrays("history.npz", {
                "user_index": h.event_users(),
                "item_index": h.items, "timestamp": h.times,
                "sizes": np.array([h.n_users, h.n_items], np.int64),
            })
            for spec, stage in self.stages():
                stage.save(writer, f"stages/{spec.name}/")
        return Path(out_dir)

    @classmethod
    def load(cls, model_dir: str | Path) -> Funnel:
        reader = ArtifactReader(model_dir, kind=ARTIFACT_KIND)
        config = config_from_dict(reader.read_json("config.json"))
        ids = reader.read_arrays("ids.npz")
        hist = reader.read_arrays("history.npz")
        n_users, n_items = (int(v) for v in hist["sizes"])
        inter = Interactions(hist["user_index"], hist["item_index"], hist["timestamp"],
                             np.ones(len(hist["item_index"]), np.float32), n_users, n_items)

        def load_stage(spec: StageSpec):
            return stage_class(spec.kind).load(reader, f"stages/{spec.name}/", spec.config, spec.name)

        channels = [load_stage(s) for s in config.channels]
        return cls(
            config, IdMap(ids["user_ids"]), IdMap(ids["item_ids"]), UserHistoryStore(inter), channels,
            load_stage(config.fallback),
            load_stage(config.ranker) if config.ranker is not None else None,
            load_stage(config.reranker) if config.reranker is not None else None,
        )

"""The ``recfunnel`` command line: a stable contract that other tools call.

    recfunnel split --interactions PATH --out DIR [--by user-time|time|leave-last] [--test-frac 0.2]
    recfunnel fit --interactions PATH [--users PATH] [--items PATH] [--config PATH] --out DIR
    recfunnel recommend --model DIR --users-file PATH --k 50 --out recs.csv
    recfunnel evaluate --model DIR --test PATH [--k 10,20,50] [--out metrics.json] [--report FILE] [--items PATH]
    recfunnel simulate --out DIR --users N --items M --days D --seed S
    recfunnel demo [--out DIR]
    recfunnel serve --model DIR [--host 127.0.0.1] [--port 8000] [--events URL] [--api-keys FILE]

Errors caused by the input are printed as one line (``error: ...``) with exit
status 2; unexpected failures as one line with exit status 1 (``--debug`` shows
the traceback). Warnings are one line each, ``warning: ...``. The commands that read
interactions take ``--user-col``, ``--item-col`` and ``--time-col`` to name the
file's own columns.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from recfunnel.errors import DataError, RecfunnelError


def _parse_ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k must be comma-separated integers, got '{text}'") from None
    if not ks or any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"--k must be positive integers, got '{text}'")
    return ks


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    """Warnings as one line, ``warning: ...``, not Python's ``cli.py:64: UserWarning`` form."""
    print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr, flush=True)


def _output_file(text: str, default_name: str) -> Path:
    """Where an output goes: a folder (existing, or named with a trailing slash) gets
    ``default_name`` inside it. Checked before the work, so a bad path fails at once."""
    out = Path(text)
    if out.is_dir() or text.endswith(("/", os.sep)):
        out = out / default_name
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{parent} is a file, so {out} cannot be written")
            break
    return out


def _columns(args: argparse.Namespace, config=None) -> dict[str, str]:
    """The interaction file's own column names: the flags, else the config's keys."""
    from recfunnel.data.loaders import column_mapping

    def pick(key: str) -> str | None:
        return getattr(args, key, None) or (getattr(config, key, None) if config is not None else None)

    return column_mapping(pick("user_col"), pick("item_col"), pick("time_col"))


# ---------------------------------------------------------------- commands
def cmd_fit(args: argparse.Namespace) -> int:
    from recfunnel.config import default_config, load_config
    from recfunnel.data.dataset import build_training_data
    from recfunnel.data.loaders import load_interactions, load_items, load_users
    from recfunnel.pipeline.offline.fit import fit_funnel
    from recfunnel.storage.artifacts import check_replaceable

    check_replaceable(args.out)  # fail before the fit, not after it
    config = load_config(args.config) if args.config else default_config()
    t0 = time.perf_counter()
    columns = _columns(args, config)
    interactions = load_interactions(args.interactions, columns=columns)
    users = load_users(args.users, columns.get("user_id")) if args.users else None
    items = load_items(args.items, columns.get("item_id")) if args.items else None
    data = build_training_data(interactions, users, items)
    _say(f"loaded {len(data.interactions):,} positive interactions, {data.n_users:,} users, "
         f"{data.n_items:,} items in {time.perf_counter() - t0:.1f}s")
    funnel = fit_funnel(data, config, progress=not args.quiet, log=_say)
    out = funnel.save(args.out, metadata={
        "interactions": str(args.interactions), "n_users": data.n_users, "n_items": data.n_items,
        "n_interactions": len(data.interactions), "fit_seconds": round(time.perf_counter() - t0, 2),
    })
    _say(f"model written to {out} ({time.perf_counter() - t0:.1f}s)")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from recfunnel.data.loaders import read_id_list
    from recfunnel.pipeline.online.funnel import Funnel
    from recfunnel.storage.artifacts import atomic_write_text

    out = _output_file(args.out, "recs.csv")
    funnel = Funnel.load(args.model)
    user_ids = read_id_list(args.users_file)
    recs = funnel.recommend(user_ids, args.k, progress=not args.quiet)
    buf = io.StringIO()
    recs.to_csv(buf, index=False, columns=["user_id", "item_id", "rank", "score"], float_format="%.6g")
    atomic_write_text(out, buf.getvalue())
    _say(f"{len(recs):,} recommendations for {len(user_ids):,} users written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recfunnel.data.loaders import load_interactions
    from recfunnel.evaluation import format_funnel_report
    from recfunnel.pipeline.offline.evaluate import evaluate_funnel
    from recfunnel.pipeline.online.funnel import Funnel
    from recfunnel.storage.artifacts import atomic_write_text

    out = _output_file(args.out, "evaluation.json") if args.out else \
        Path(args.model).parent / (Path(args.model).name + ".evaluation.json")
    report = _output_file(args.report, "report.html") if args.report else None
    funnel = Funnel.load(args.model)
    columns = _columns(args, funnel.config)
    test = load_interactions(args.test, require_timestamp=False, columns=columns)
    category = None
    if args.items:
        from recfunnel.data.loaders import load_items
        from recfunnel.pipeline.offline.evaluate import item_category_codes

        category = item_category_codes(load_items(args.items, columns.get("item_id")), funnel.item_ids.ids,
                                       args.category_col)
    result = evaluate_funnel(funnel, test, args.k, progress=not args.quiet, keep_recommendations=bool(args.report),
                             item_category=category)
    print(format_metrics(result["metrics"], args.k))
    print()
    print(format_funnel_report(result["funnel"]))
    recommendations = result.pop("recommendations", None)  # arrays: for the report, not the JSON
    atomic_write_text(out, json.dumps(result, indent=2, default=float))
    _say(f"metrics written to {out}")
    if report is not None:
        from recfunnel.evaluation.html_report import write_report

        write_report(report, {**result, "recommendations": recommendations}, funnel,
                     title=f"recfunnel evaluation: {Path(args.model).name}",
                     run_info={"model": args.model, "test": args.test})
        _say(f"report written to {report}")
    return 0


def format_metrics(metrics: dict, ks: Sequence[int]) -> str:
    """Metrics as a table: one row per K, one column per metric."""
    names = ["recall", "precision", "ndcg", "map", "hit_rate"]
    lines = ["| K | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in sorted(set(ks)):
        vals = [metrics.get(f"{n}@{k}", float("nan")) for n in names]
        lines.append(f"| {k} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    extra = {k: v for k, v in metrics.items() if not any(k.startswith(n + "@") for n in names)}
    if extra:
        lines.append("")
        lines.extend(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in extra.items())
    return "\n".join(lines)


def cmd_split(args: argparse.Namespace) -> int:
    from recfunnel.data.loaders import load_interactions
    from recfunnel.data.splits import split_interactions
    from recfunnel.storage.artifacts import atomic_write_text

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    interactions = load_interactions(args.interactions, columns=_columns(args))
    train, test = split_interactions(interactions, args.by, args.test_frac)
    for name, part in (("train.csv", train), ("test.csv", test)):
        atomic_write_text(out / name, _interactions_csv(part))
    _say(f"split {len(interactions):,} interactions by '{args.by}': {len(train):,} in {out / 'train.csv'}, "
         f"{len(test):,} in {out / 'test.csv'} ({test['user_id'].nunique():,} test users)")
    return 0


def _interactions_csv(frame) -> str:
    """CSV with the canonical column names; multi-value cells joined with '|'."""
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, tuple)).any():
            frame[col] = frame[col].map(lambda v: "|".join(map(str, v)) if isinstance(v, tuple) else v)
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue()


def cmd_simulate(args: argparse.Namespace) -> int:
    from recfunnel.data.simulator import SimulatorConfig, simulate

    config = SimulatorConfig(n_users=args.users, n_items=args.items, n_days=args.days, seed=args.seed,
                             n_authors=max(10, args.items // 20))
    summary = simulate(config, args.out, progress=not args.quiet, target_exposures=args.exposures,
                       overwrite=args.overwrite)
    _say(f"simulated platform written to {args.out}: {summary}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recfunnel.pipeline.offline.demo import run_demo

    return run_demo(Path(args.out), progress=not args.quiet, log=_say)


def cmd_serve(args: argparse.Namespace) -> int:
    from recfunnel.serving.app import create_app
    from recfunnel.serving.models import resolve_inside
    from recfunnel.serving.settings import ServingSettings
    from recfunnel.storage.artifacts import ArtifactReader

    ArtifactReader(args.model)  # a missing or foreign model directory: one line, exit 2, before binding
    if args.models_root:
        resolve_inside(Path(args.models_root), str(Path(args.model).resolve()))
    settings = ServingSettings(model_dir=Path(args.model), models_root=args.models_root, host=args.host,
                               port=args.port, events_url=args.events, api_keys_file=args.api_keys,
                               max_concurrent=args.max_concurrent, max_request_bytes=args.max_request_bytes,
                               budget_ms=args.budget_ms, channel_timeout_ms=args.channel_timeout_ms,
                               stage_timeout_ms=args.stage_timeout_ms, load_in_background=True,
                               event_retention_days=args.event_retention_days, batch_max=args.batch_max,
                               admission_control=not args.no_admission_control)
    app = create_app(settings)  # key and settings errors surface here, before the port is bound

    import uvicorn

    _say(f"serving {args.model} on http://{settings.host}:{settings.port} (events: {settings.events_url})")
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False,
                log_level="warning" if args.quiet else "info")
    return 0


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recfunnel", description="A multi-stage recommender system.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("split", help="split interactions into train.csv and test.csv")
    p.add_argument("--interactions", required=True, help="CSV/TSV/Parquet/RecBole/GroupLens interactions")
    p.add_argument("--out", required=True, help="folder to write train.csv and test.csv into")
    p.add_argument("--by", choices=["user-time", "time", "leave-last"], default="user-time",
                   help="user-time: each user's newest events (default); time: all events after one "
                        "cutoff; leave-last: each user's newest event")
    p.add_argument("--test-frac", type=float, default=0.2, help="share of events held out (user-time, time)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("fit", help="train the whole funnel")
    p.add_argument("--interactions", required=True, help="CSV/TSV/Parquet/RecBole/GroupLens interactions")
    p.add_argument("--users", help="optional user table")
    p.add_argument("--items", help="optional item table")
    p.add_argument("--config", help="funnel config (JSON or TOML); the keys it gives override the built-in best config")
    p.add_argument("--out", required=True, help="model directory to write")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("recommend", help="top-K recommendations for a list of users")
    p.add_argument("--model", required=True)
    p.add_argument("--users-file", required=True, help="one user id per line")
    p.add_argument("--k", type=_positive_int, default=50)
    p.add_argument("--out", required=True, help="CSV with columns user_id,item_id,rank,score")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("evaluate", help="full-ranking metrics on held-out interactions")
    p.add_argument("--model", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--k", type=_parse_ks, default=[10, 20, 50])
    p.add_argument("--out", help="JSON file for the metrics (default: next to the model)")
    p.add_argument("--items", help="optional item table: category diversity and coverage in the metrics and report")
    p.add_argument("--category-col", help="the item table's category column (default: category, genre(s), "
                                          "class, ...; a list gives its first value)")
    p.add_argument("--report", help="also write a self-contained HTML report (plots inline) to this file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("simulate", help="generate a synthetic feed platform with ground truth")
    p.add_argument("--out", required=True)
    p.add_argument("--users", type=_positive_int, default=10_000)
    p.add_argument("--items", type=_positive_int, default=50_000)
    p.add_argument("--days", type=_positive_int, default=14)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exposures", type=_positive_int, default=None, help="total exposures to generate")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier simulation in --out")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="simulate, fit, evaluate and print the funnel report")
    p.add_argument("--out", default="runs/demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="the online service (HTTP) over a fitted model")
    p.add_argument("--model", required=True, help="model directory to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=_positive_int, default=8000)
    p.add_argument("--events", help="event store URL: sqlite:///PATH (default: state/events.db next to "
                                     "the model), redis://HOST:PORT/DB or memory://")
    p.add_argument("--api-keys", help="file of API keys, 'read-write:<key>' or 'read-only:<key>' per line "
                                      "(also read from $RECFUNNEL_API_KEYS)")
    p.add_argument("--models-root", help="folder admin loads may read model versions from "
                                         "(default: the model directory's parent)")
    p.add_argument("--max-concurrent", type=_positive_int, default=64, help="requests handled at once")
    p.add_argument("--max-request-bytes", type=_positive_int, default=1 << 20, help="largest request body")
    p.add_argument("--budget-ms", type=float, default=250.0, help="end-to-end budget of a recommendation")
    p.add_argument("--channel-timeout-ms", type=float, default=100.0, help="a later retrieval channel is dropped")
    p.add_argument("--stage-timeout-ms", type=float, default=100.0, help="a later ranker/re-ranker is skipped")
    p.add_argument("--batch-max", type=_positive_int, default=16,
                   help="recommendations that queue while a batch runs run together, at most this many "
                        "(1: every request alone)")
    p.add_argument("--no-admission-control", action="store_true",
                   help="answer every request, even after its budget (default: 503 + Retry-After when "
                        "less of the budget is left than a request takes)")
    p.add_argument("--event-retention-days", type=_positive_float, default=None,
                   help="compact the event log at start-up and hourly: drop events older than this "
                        "(published items are kept); default: keep every event")
    p.set_defaults(func=cmd_serve)

    for name in ("split", "fit", "evaluate"):  # the commands that read interactions
        p = sub.choices[name]
        p.add_argument("--user-col", help="the interaction file's user id column (default: found by name)")
        p.add_argument("--item-col", help="the interaction file's item id column (default: found by name)")
        p.add_argument("--time-col", help="the interaction file's timestamp column (default: found by name)")
    for p in sub.choices.values():
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from recfunnel.runtime import configure_threads

    configure_threads()  # before torch, faiss or numba start their pools (a container may show the host's cores)
    showwarning = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return args.func(args)
    except RecfunnelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be read or written (missing, a folder, no permission, disk full)
        print(f"error: {DataError(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI contract is one line, never a traceback
        if args.debug:
            traceback.print_exc()
        print(f"error: unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = showwarning


if __name__ == "__main__":
    sys.exit(main())

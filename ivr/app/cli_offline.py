"""The commands that work on the data without a running controller: ``ivr banner|token|report|campaign``.

Each opens the command line's services (``offline.py``: the banner, API tokens, reports, campaigns, on a store of
their own) and calls them; none opens Redis itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from .config_load import load


def cmd_banner(args: argparse.Namespace) -> int:
    from ..banner.service import BannerError
    from .offline import offline_services

    cfg = load(args.config)

    async def run() -> int:
        async with offline_services(cfg) as services:
            banner = services.banner
            try:
                if args.action == "set":
                    data = await banner.set(args.lang, " ".join(args.text), by="cli")
                    print(json.dumps(data, ensure_ascii=False))
                elif args.action == "clear":
                    await banner.clear(args.lang, by="cli")
                    print(json.dumps({"lang": args.lang, "banner": None}))
                else:
                    print(json.dumps(await banner.all(), ensure_ascii=False, indent=2))
            except BannerError as exc:
                print(f"ivr banner: {exc}", file=sys.stderr)
                return 2
        return 0

    return asyncio.run(run())


def cmd_token(args: argparse.Namespace) -> int:
    from ..core.service_errors import ServiceError
    from .offline import offline_services

    cfg = load(args.config)

    async def run() -> int:
        async with offline_services(cfg) as services:
            tokens = services.tokens
            if args.action == "create":
                try:
                    token = await tokens.create(args.name, args.role, by="cli")
                except ServiceError as exc:
                    print(f"ivr token: {exc}", file=sys.stderr)
                    return 2
                print(token)
                print(f"token for {args.name!r} ({args.role}): shown once, stored hashed", file=sys.stderr)
            elif args.action == "list":
                print(json.dumps(await tokens.list(), indent=2))
            else:
                n = await tokens.revoke(args.name, by="cli")
                print(json.dumps({"revoked": n}))
                return 0 if n else 1
        return 0

    return asyncio.run(run())


def cmd_report(args: argparse.Namespace) -> int:
    from ..core.service_errors import ServiceError
    from ..reports import service as reports
    from .offline import offline_services

    cfg = load(args.config)
    try:
        tz = reports.parse_tz(args.tz)
        query = {k: v for k, v in (("since", args.since), ("until", args.until), ("hours", args.hours)) if v}
        start, end = reports.window_from(query, tz, args.by)
    except reports.ReportError as exc:
        print(f"ivr report: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        async with offline_services(cfg) as services:
            try:
                data = await services.reports.report(start=start, end=end, by=args.by, tz=tz,
                                                     sl_target=args.sl_target)
            except ServiceError as exc:
                print(f"ivr report: {exc}", file=sys.stderr)
                return 2
        rows = data["rows"] + ([data["total"]] if data["rows"] else [])
        if args.format == "json":
            print(json.dumps(data, indent=2))
        elif args.format == "csv":
            print(reports.to_csv(rows), end="")
        else:
            print(reports.to_table(rows) if data["rows"] else "no calls in this period")
        if args.csv:
            Path(args.csv).write_text(reports.to_csv(rows), encoding="utf-8")
            print(f"CSV written to {args.csv}", file=sys.stderr)
        return 0

    return asyncio.run(run())


def cmd_campaign(args: argparse.Namespace) -> int:
    import yaml

    from ..campaigns import contacts
    from ..core.service_errors import ServiceError
    from .offline import offline_services

    cfg = load(args.config)

    async def run() -> int:
        async with offline_services(cfg) as services:
            campaigns = services.campaigns
            try:
                if args.action == "create":
                    data = yaml.safe_load(Path(args.file).read_text(encoding="utf-8"))
                    campaign = await campaigns.create(data, by="cli")
                    print(json.dumps(campaign.to_dict(), ensure_ascii=False))
                elif args.action == "import":
                    path = Path(args.csv)
                    report = await campaigns.import_contacts(
                        args.id, path, region=args.region, progress=contacts.progress_bar(path.stat().st_size),
                        errors_path=Path(args.errors) if args.errors else None, columns=args.columns)
                    print(json.dumps({"rows": report.rows, "imported": report.imported, "merged": report.merged,
                                      "dnc": report.dnc, "rejected": report.rejected, "columns": report.columns}))
                    print("columns read: " + ", ".join(f"{c} as {f}" for f, c in report.columns.items()),
                          file=sys.stderr)
                    for line, reason in report.errors[:20]:
                        print(f"line {line}: {reason}", file=sys.stderr)
                    if report.rejected > 20:
                        print(f"... {report.rejected - 20} more rejected rows"
                              + (f" (all in {args.errors})" if args.errors else " (use --errors FILE for all)"),
                              file=sys.stderr)
                elif args.action in ("start", "pause", "stop"):
                    state = {"start": "running", "pause": "paused", "stop": "stopped"}[args.action]
                    await campaigns.set_state(args.id, state, by="cli")
                    print(json.dumps({"id": args.id, "state": state}))
                elif args.action == "export":
                    out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
                    try:
                        await campaigns.export(args.id, out)
                    finally:
                        if args.out:
                            out.close()
                else:
                    print(json.dumps(await campaigns.list(), indent=2))
            except (ServiceError, KeyError, ValueError, OSError) as exc:
                print(f"ivr campaign: {exc}", file=sys.stderr)
                return 2
        return 0

    return asyncio.run(run())

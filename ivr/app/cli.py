"""Command line: ``ivr up|down|status|serve|report|token|campaign|banner|asterisk-conf render|prompts build|menus check``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from .cli_offline import cmd_banner, cmd_campaign, cmd_report, cmd_token
from .config import ConfigError
from .config_load import backend_names, load


def _setup_logging(level: str, log_file: str | None) -> None:
    from .logutil import BufferedWatchedFileHandler, CallLogFormatter

    handler: logging.Handler
    if log_file:
        handler = BufferedWatchedFileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CallLogFormatter())
    # the format uses none of these: not gathering them makes each line cheaper (the logging HOWTO's
    # "Optimization"; the controller logs a few lines per call)
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def cmd_serve(args: argparse.Namespace) -> int:
    from .controller import Controller

    cfg = load(args.config)
    _setup_logging(args.log_level or cfg.log_level, args.log_file)
    try:
        import uvloop
    except ImportError:   # not on Windows
        asyncio.run(Controller(cfg).run_forever())
    else:
        uvloop.run(Controller(cfg).run_forever())
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from ..devtools.cluster import Cluster, is_cluster
    from ..devtools.stack import Stack, StackError

    extra = {"api": {"host": args.api_host}} if args.api_host else None
    if args.nodes > 1:   # Kamailio in front of N nodes sharing one Redis (docs/cluster.md)
        cluster = Cluster(args.workdir)
        cluster.init(nodes=args.nodes, port_base=args.port_base, extra=extra)
        info = cluster.up(timeout=args.timeout)
    elif args.nodes == 1:
        if is_cluster(args.workdir):
            raise StackError(f"{args.workdir} holds a cluster: pass its --nodes, or use another workdir")
        stack = Stack(args.workdir)
        stack.init(port_base=args.port_base, extra=extra)
        info = stack.up(timeout=args.timeout)
    else:
        raise StackError(f"--nodes: 1 or more, got {args.nodes}")
    print(json.dumps(info), flush=True)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from ..devtools.cluster import Cluster, is_cluster
    from ..devtools.stack import Stack

    stopped = Cluster(args.workdir).down() if is_cluster(args.workdir) else Stack(args.workdir).down()
    print(json.dumps({"stopped": stopped}))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ..devtools.cluster import Cluster, is_cluster
    from ..devtools.stack import Stack

    status = Cluster(args.workdir).status() if is_cluster(args.workdir) else Stack(args.workdir).status()
    print(json.dumps(status, indent=2))
    return 0 if status.get("healthy") else 1


def cmd_render(args: argparse.Namespace) -> int:
    from ..asterisk import conf as asterisk_conf
    from .config_load import load_secrets, write_secrets

    cfg = load(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    secrets_file = Path(args.secrets) if args.secrets else out / "secrets.yaml"
    secrets = load_secrets(secrets_file) if secrets_file.exists() else {}
    if not secrets.get("ami_secret"):
        secrets["ami_secret"] = cfg.asterisk.ami_secret or asterisk_conf.new_secret(32)
        write_secrets(secrets_file, secrets)
    state = Path(args.state_dir) if args.state_dir else out
    dirs = asterisk_conf.AsteriskDirs.under(out, state)
    for path in asterisk_conf.render(cfg, dirs, secrets):
        print(path)
    if asterisk_conf.sip_proxy(cfg):   # a node of a cluster: Kamailio's files too (ivr/asterisk/kamailio.py)
        from ..asterisk import kamailio

        dispatcher = out.resolve() / "dispatcher.list"
        settings = kamailio.from_config(cfg, str(dispatcher))
        for path, text in ((out / "kamailio.cfg", kamailio.render_cfg(settings)),
                           (dispatcher, kamailio.render_dispatcher(settings.nodes))):
            path.write_text(text, encoding="utf-8")
            print(path)
    print(f"AMI secret kept in {secrets_file} (0600)", file=sys.stderr)
    return 0


def cmd_prompts_build(args: argparse.Namespace) -> int:
    from ..prompts import build

    argv = []
    for lang in args.lang or []:
        argv += ["--lang", lang]
    if args.force:
        argv.append("--force")
    if args.out:
        argv += ["--out", args.out]
    return build.main(argv)


def cmd_menus_check(args: argparse.Namespace) -> int:
    from ..menu.schema import MenuSet

    cfg = load(args.config) if args.config else load(None)
    menus = MenuSet(args.dir or cfg.dialplans_dir, frozenset(cfg.queue_names()), cfg.languages,
                    backend_names(cfg))
    errors = menus.load()
    for name, menu in sorted(menus.menus.items()):
        print(f"ok    {menu.source}: menu {name} ({len(menu.nodes)} nodes)")
    for err in errors:
        print(f"error {err}")
    return 1 if errors else 0


def _api_call(args: argparse.Namespace, method: str, path: str, body: object = None) -> tuple[int, object]:
    """Call the running controller's API (agents added at run time need it: it reloads Asterisk)."""
    import os
    import urllib.error
    import urllib.request

    from .config_load import load_secrets

    cfg = load(args.config)
    token = args.token or os.environ.get("IVR_TOKEN", "")
    if not token:
        secrets = Path(args.config).parent / "secrets.yaml"
        token = load_secrets(secrets).get("api_token", "") if secrets.exists() else ""
    if not token:
        raise ConfigError("no API token: pass --token, set IVR_TOKEN, or keep api_token in secrets.yaml")
    host = f"[{cfg.api.host}]" if ":" in cfg.api.host else cfg.api.host
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{host}:{cfg.api.port}{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, {"error": exc.reason}
    except OSError as exc:
        return 0, {"error": f"the controller API at {host}:{cfg.api.port} is not reachable ({exc})"}


def cmd_agent(args: argparse.Namespace) -> int:
    fields: dict[str, object] = {}
    for key in ("name", "skill", "team", "tier", "mobile"):
        if getattr(args, key) is not None:
            fields[key] = getattr(args, key)
    for key in ("queues", "languages"):
        if getattr(args, key) is not None:
            fields[key] = [v.strip() for v in getattr(args, key).split(",") if v.strip()]
    if args.penalty is not None:
        fields["penalty"] = args.penalty
    if args.action == "list":
        status, out = _api_call(args, "GET", "/api/v1/agents")
    elif args.action == "add":
        if args.id:
            fields["id"] = args.id
        status, out = _api_call(args, "POST", "/api/v1/agents", fields)
    elif not args.id:
        print(f"ivr agent {args.action}: needs --id", file=sys.stderr)
        return 2
    elif args.action == "update":
        status, out = _api_call(args, "PATCH", f"/api/v1/agents/{args.id}", fields)
    elif args.action == "remove":
        status, out = _api_call(args, "DELETE", f"/api/v1/agents/{args.id}")
    else:
        status, out = _api_call(args, "POST", f"/api/v1/agents/{args.id}/{args.action}")
    if not 200 <= status < 300:
        err = out.get("error") if isinstance(out, dict) else out
        print(f"ivr agent {args.action}: {err}" + (f" (HTTP {status})" if status else ""), file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.action == "add":
        print("the SIP password is shown once: give it to the agent now", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ivr", description="Crisis-surge call centre controller for Asterisk")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the controller in the foreground against an existing Asterisk and Redis")
    s.add_argument("--config", required=True, help="YAML config file (secrets.yaml beside it is read too)")
    s.add_argument("--log-file", help="log to this file instead of stderr")
    s.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (overrides the config)")
    s.set_defaults(func=cmd_serve)

    for name, func, helptext in (("up", cmd_up, "start a private Asterisk, Redis and controller"),
                                 ("down", cmd_down, "stop everything `up` started"),
                                 ("status", cmd_status, "report the health of a stack")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--workdir", required=True, help="folder for config, secrets, logs and data")
        if name == "up":
            s.add_argument("--port-base", type=int, default=None,
                           help="ports are base+60 (SIP), +38 (AMI), +73 (AGI), +80 (API), +1379 (Redis); default 15000")
            s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for health")
            s.add_argument("--nodes", type=int, default=1,
                           help="Asterisk nodes (each with its own controller): above 1, Kamailio in front of them "
                                "on base+60 and one shared Redis; node i on the ports of base+100*i (docs/cluster.md)")
            s.add_argument("--api-host", help="address the API and dashboard listen on (default 127.0.0.1; kept in "
                                              "the workdir's ivr.yaml). 0.0.0.0 is for a VM whose port is forwarded "
                                              "to its host's loopback (vagrant/README.md): it opens the API to every "
                                              "network the machine is on")
        s.set_defaults(func=func)

    d = sub.add_parser("demo", help="bring the stack up and replay the crisis hour (or, --classic, a small surge) "
                                    "of SIPp callers through it")
    d.add_argument("--workdir", default="run/demo", help="folder for the demo stack (default run/demo)")
    d.add_argument("--profile", help="crisis hour: the profile (default profiles/crisis-day.yaml if present, "
                                     "else profiles/default.yaml)")
    d.add_argument("--seed", type=int, help="crisis hour: seed of the callers (default: the profile's)")
    d.add_argument("--hour", type=int, help="crisis hour: hour of the day (default: the profile's peak)")
    d.add_argument("--factor", type=float, default=10.0, help="crisis hour: time compression (default 10)")
    d.add_argument("--press0", type=float, default=0.2,
                   help="crisis hour: share of self-service callers who then press 0 for an agent (default 0.2)")
    d.add_argument("--seconds", type=float, help="crisis hour: only the first SECONDS of the compressed hour")
    d.add_argument("--with-static", action="store_true",
                   help="crisis hour: replay it through a static app_queue line on the stack too (default: the "
                        "simulator's static prediction)")
    d.add_argument("--classic", action="store_true",
                   help="the small surge demo instead (--duration, --rate, --agents, --volunteers, --talk, "
                        "--patience, --keep-running)")
    d.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals (default 60)")
    d.add_argument("--rate", type=float, default=1.0, help="calls per second (default 1)")
    d.add_argument("--agents", type=int, default=6, help="agent phones, a third novices (default 6)")
    d.add_argument("--volunteers", type=int, default=3,
                   help="volunteer phones the balancing loop brings in when the wait grows (default 3)")
    d.add_argument("--campaign", type=int, default=None,
                   help="contacts of a small notice campaign (default 6, or the profile's notices; 0: none)")
    d.add_argument("--talk", type=float, default=8.0, help="seconds an agent talks (default 8)")
    d.add_argument("--patience", type=float, default=60.0, help="seconds a caller waits before giving up")
    d.add_argument("--port-base", type=int, default=None)
    d.add_argument("--keep-running", action="store_true", help="leave the stack up after the summary")
    d.set_defaults(func=lambda a: __import__("ivr.devtools.demo", fromlist=["demo_main"]).demo_main(a))

    ac = sub.add_parser("asterisk-conf", help="Asterisk configuration")
    acs = ac.add_subparsers(dest="sub", required=True)
    r = acs.add_parser("render", help="render asterisk_conf/ templates into a config directory")
    r.add_argument("--config", required=True)
    r.add_argument("--out", required=True, help="directory for the .conf files")
    r.add_argument("--state-dir", help="directory for Asterisk's lib/spool/run/log (default: --out)")
    r.add_argument("--secrets", help="secrets file (default: OUT/secrets.yaml, created 0600)")
    r.set_defaults(func=cmd_render)

    pr = sub.add_parser("prompts", help="audio prompts")
    prs = pr.add_subparsers(dest="sub", required=True)
    b = prs.add_parser("build", help="build prompts into Asterisk formats (8 kHz mono wav and ulaw)")
    b.add_argument("--lang", action="append")
    b.add_argument("--out")
    b.add_argument("--force", action="store_true")
    b.set_defaults(func=cmd_prompts_build)

    bn = sub.add_parser("banner", help="the live crisis message callers hear first")
    bn.add_argument("action", choices=("show", "set", "clear"))
    bn.add_argument("text", nargs="*", help="the message (with set)")
    bn.add_argument("--config", required=True, help="the controller's config (e.g. DIR/ivr.yaml)")
    bn.add_argument("--lang", default="en")
    bn.set_defaults(func=cmd_banner)

    sm = sub.add_parser("simulate", help="a simulated crisis day: static setup vs the balancing policy",
                        add_help=False)
    sm.add_argument("rest", nargs=argparse.REMAINDER)
    sm.set_defaults(func=lambda a: __import__("ivr.devtools.simulate", fromlist=["main"]).main(a.rest))

    cp = sub.add_parser("campaign", help="outbound notification campaigns")
    cp.add_argument("action", choices=("create", "import", "start", "pause", "stop", "status", "export"))
    cp.add_argument("--config", required=True)
    cp.add_argument("--file", help="campaign definition (YAML), with create")
    cp.add_argument("--id", help="campaign id")
    cp.add_argument("--csv", help="contacts file, with import")
    cp.add_argument("--region", default="US", help="country of numbers written without +, with import")
    cp.add_argument("--errors", help="write every rejected row here, with import")
    cp.add_argument("--columns", default="",
                    help="with import: which column is which field when the aliases do not know it, e.g. "
                         "'number=Telefon,lang=Sprache' (fields: number, name, lang, tz, booking)")
    cp.add_argument("--out", help="file for export (default: stdout)")
    cp.set_defaults(func=cmd_campaign)

    tk = sub.add_parser("token", help="API tokens (stored hashed in Redis)")
    tk.add_argument("action", choices=("create", "list", "revoke"))
    tk.add_argument("--config", required=True)
    tk.add_argument("--name", default="", help="who the token is for (create, revoke)")
    tk.add_argument("--role", default="viewer", help="viewer, supervisor or admin")
    tk.set_defaults(func=cmd_token)

    ag = sub.add_parser("agent", help="agents and volunteers through the running controller (SIP accounts too)")
    ag.add_argument("action", choices=("list", "add", "update", "remove", "login", "logout", "pause", "unpause"))
    ag.add_argument("--config", required=True)
    ag.add_argument("--token", default="", help="API token (default: IVR_TOKEN, then api_token in secrets.yaml)")
    ag.add_argument("--id", default="", help="agent id (SIP user); add picks the next free one from 7001 if omitted")
    ag.add_argument("--name")
    ag.add_argument("--skill", choices=("experienced", "novice"))
    ag.add_argument("--team")
    ag.add_argument("--tier", choices=("core", "volunteer"))
    ag.add_argument("--queues", help="comma-separated queue names")
    ag.add_argument("--languages", help="comma-separated language codes")
    ag.add_argument("--penalty", type=int, help="base penalty 0-100")
    ag.add_argument("--mobile", help="digits, dialled through the trunk while the phone is unreachable ('' removes)")
    ag.set_defaults(func=cmd_agent)

    rp = sub.add_parser("report", help="calls, ASA, service level, abandonment, FCR, satisfaction by hour or day")
    rp.add_argument("--config", required=True)
    rp.add_argument("--by", choices=("hour", "day"), default="hour")
    rp.add_argument("--since", help="ISO date/time or Unix time (default: 24 h ago by hour, 7 days ago by day)")
    rp.add_argument("--until", help="ISO date/time or Unix time (default: now)")
    rp.add_argument("--hours", help="the last N hours up to --until (instead of --since)")
    rp.add_argument("--tz", default="UTC", help="time zone of the periods, e.g. Europe/Paris (default UTC)")
    rp.add_argument("--sl-target", type=float, default=20.0, help="service-level target in seconds (default 20)")
    rp.add_argument("--format", choices=("table", "csv", "json"), default="table")
    rp.add_argument("--csv", help="also write the rows as CSV to this file")
    rp.set_defaults(func=cmd_report)

    m = sub.add_parser("menus", help="IVR menus")
    ms = m.add_subparsers(dest="sub", required=True)
    c = ms.add_parser("check", help="validate dialplans/*.yaml")
    c.add_argument("--config")
    c.add_argument("--dir")
    c.set_defaults(func=cmd_menus_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:   # its own options: see `ivr simulate --help`
        from ..devtools.simulate import main as simulate_main
        return simulate_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"ivr: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except Exception as exc:
        stack_mod = sys.modules.get("ivr.devtools.stack")   # only a dev command (up/down/status/demo) raises StackError

        if stack_mod is not None and isinstance(exc, stack_mod.StackError):
            print(f"ivr: {exc}", file=sys.stderr)
            return 1
        raise

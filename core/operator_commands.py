"""Operators' commands for costs and keys (registered through ``aipersona.commands``):

- ``aipersona usage``: tokens per user, chat and UTC day (the endpoint's reported usage), as
  a table or JSON;
- ``aipersona keys generate|rotate|encrypt``: encryption at rest (``[privacy]
  encryption_key_env``): make a master key, re-wrap every data key under a new master key,
  or encrypt the texts written before encryption was turned on.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
from collections import defaultdict
from typing import Any

from .cli import CliError, add_config_options, admin_core
from .storage import keyring_for
from .storage.crypto import Keyring, load_master_key

GROUPS = {
    "row": ("day", "who", "chat"),
    "user": ("who",),
    "chat": ("chat",),
    "day": ("day",),
}
NUMBERS = ("calls", "prompt_tokens", "completion_tokens", "total_tokens")


def usage_table(rows: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Usage rows summed per ``GROUPS[by]`` (optimizer calls are the person's own, in the
    chat column as "(optimizer)"), largest total first within a day."""
    keys = GROUPS[by]
    sums: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(dict)
    for row in rows:
        chat = f"{row['platform']}:{row['chat_id']}" if row["role"] == "chat" else "(optimizer)"
        item = {
            "day": row["day"],
            "who": row["who"] or f"persona {row['persona_id']}",
            "chat": chat,
        }
        out = sums[tuple(item[k] for k in keys)]
        if not out:
            out.update({k: item[k] for k in keys}, **dict.fromkeys(NUMBERS, 0))
        out["calls"] += row["calls"]
        out["prompt_tokens"] += row["prompt_tokens"]
        out["completion_tokens"] += row["completion_tokens"]
        out["total_tokens"] += row["prompt_tokens"] + row["completion_tokens"]
    return sorted(sums.values(), key=lambda r: (r.get("day", ""), -r["total_tokens"]))


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no usage recorded)"
    columns = list(rows[0])
    shown = [[f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(s[i]) for s in shown)) for i, c in enumerate(columns)]
    numeric = [isinstance(rows[0][c], int) for c in columns]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, shown)])


async def _usage(args: argparse.Namespace) -> int:
    if args.days < 1:
        raise CliError("--days must be at least 1")
    core = await admin_core(args)
    try:
        rows = await core.usage_report(time.time() - (args.days - 1) * 86_400)
    finally:
        await core.close()
    table = usage_table(rows, args.by)
    if args.json:
        print(json.dumps(table, ensure_ascii=False, indent=2))
    else:
        print(format_table(table))
    return 0


def register_usage(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "usage", help="tokens per user, chat and day, as the model endpoint reported them"
    )
    add_config_options(p)
    p.add_argument("--days", type=int, default=7, help="this many UTC days, today included")
    p.add_argument(
        "--by",
        choices=sorted(GROUPS),
        default="row",
        help="sum per user, chat or day (default: one row per day, user and chat)",
    )
    p.add_argument("--json", action="store_true", help="JSON output")
    p.set_defaults(func=_usage)


# -- keys -------------------------------------------------------------------------------------


async def _keys(args: argparse.Namespace) -> int:
    if args.keys_command == "generate":
        print(base64.b64encode(os.urandom(32)).decode())
        return 0
    core = await admin_core(args)
    try:
        if keyring_for(core.config.privacy) is None:
            raise CliError(
                "encryption is off: set [privacy] encryption_key_env in the config (for "
                "'rotate': the variable with the current key)"
            )
        if args.keys_command == "rotate":
            if args.new_key_env == core.config.privacy.encryption_key_env:
                raise CliError("--new-key-env names the current key's variable")
            new = Keyring(load_master_key(args.new_key_env))
            count = await core.storage.rewrap_keys(new)
            print(
                f"re-wrapped {count:,} data key(s) under the key in {args.new_key_env}. Now "
                f"put that key in {core.config.privacy.encryption_key_env} (or point "
                "[privacy] encryption_key_env at it), restart the bot, and destroy the old key"
            )
        else:
            count = await core.storage.seal_plaintext()
            print(f"encrypted {count:,} text(s) written before encryption was on")
    finally:
        await core.close()
    return 0


def register_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="encryption at rest: generate, rotate or apply keys")
    keys = p.add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("generate", help="print a new random master key (base64, 32 bytes)")
    p.set_defaults(func=_keys)
    p = keys.add_parser(
        "rotate", help="re-wrap every data key under a new master key (stop the bot first)"
    )
    add_config_options(p)
    p.add_argument(
        "--new-key-env", required=True, metavar="VAR", help="variable holding the new key"
    )
    p.set_defaults(func=_keys)
    p = keys.add_parser("encrypt", help="encrypt texts stored before encryption was turned on")
    add_config_options(p)
    p.set_defaults(func=_keys)

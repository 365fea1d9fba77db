"""The annotation store: every action of every annotator, one durable SQLite row each.

`annotations.sqlite` (WAL, synchronous=FULL) holds one table of actions; `record` returns only after
the row is committed, so a save acknowledged to the browser is on disk. Each action carries the
client's id for it: sending the same action again (a retry after a lost reply) records nothing new.
The state of an item for an annotator (display order, ranks so far, edit, note, status) is the fold
of that annotator's actions on it, so a reloaded page or a restarted server restores a half-done
ranking exactly.

Action kinds and payloads:
  show    {"order": [candidate ids]}  the order the page displays (kept from the first show)
  rank    {"candidate": id, "rank": n | None}  one candidate's rank (1 = best; equal ranks = a tie)
  clear   {}  every rank removed
  edit    {"text": str}  the rewrite of the best answer ("" removes it)
  note    {"text": str}
  submit  {"ranks": {id: n}}  the ranking as displayed, complete: the item is done
  skip    {}  /  flag {"reason": str}  done without a ranking
  reopen  {}  open again (to change a done item)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .pairs import Judgement

DATABASE = "annotations.sqlite"
KINDS = ("show", "rank", "clear", "edit", "note", "submit", "skip", "flag", "reopen")
DONE = {"submit": "submitted", "skip": "skipped", "flag": "flagged"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL UNIQUE,
    annotator TEXT NOT NULL,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_by_annotator ON actions (annotator, item_id, seq);
"""


class ActionError(ValueError):
    """An action the store refuses (it records nothing)."""


@dataclass
class ItemState:
    """One annotator's state of one item."""

    order: list[str] = field(default_factory=list)
    ranks: dict[str, int] = field(default_factory=dict)
    edit: str | None = None
    note: str = ""
    status: str = "open"  # open | submitted | skipped | flagged
    flag_reason: str = ""
    actions: int = 0

    def apply(self, kind: str, payload: dict) -> None:
        self.actions += 1
        if kind == "show":
            self.order = self.order or list(payload["order"])
        elif kind == "rank":
            if payload.get("rank") is None:
                self.ranks.pop(payload["candidate"], None)
            else:
                self.ranks[payload["candidate"]] = int(payload["rank"])
        elif kind == "clear":
            self.ranks = {}
        elif kind == "edit":
            self.edit = payload.get("text") or None
        elif kind == "note":
            self.note = payload.get("text", "")
        elif kind == "submit":
            self.ranks, self.status = {k: int(v) for k, v in payload["ranks"].items()}, "submitted"
        elif kind in ("skip", "flag"):
            self.status, self.flag_reason = DONE[kind], payload.get("reason", "")
        elif kind == "reopen":
            self.status = "open"


def check_action(kind: str, payload: dict, candidate_ids: list[str]) -> None:
    """Refuse an action that does not fit the item, with one sentence saying why."""
    if kind not in KINDS:
        raise ActionError(f"unknown action {kind!r}; known: {', '.join(KINDS)}")
    ids = set(candidate_ids)
    if kind == "show" and sorted(payload.get("order", [])) != sorted(ids):
        raise ActionError(f"show: the order {payload.get('order')} is not a permutation of {sorted(ids)}")
    if kind == "rank":
        rank = payload.get("rank")
        if payload.get("candidate") not in ids:
            raise ActionError(f"rank: unknown candidate {payload.get('candidate')!r}")
        if rank is not None and not (isinstance(rank, int) and 1 <= rank <= len(ids)):
            raise ActionError(f"rank: {rank!r} is not a rank from 1 to {len(ids)}")
    if kind == "submit":
        ranks = payload.get("ranks") or {}
        if set(ranks) != ids:
            missing = sorted(ids - set(ranks))
            raise ActionError(f"submit: every answer needs a rank (missing: {', '.join(missing) or 'none'}; "
                              f"unknown: {', '.join(sorted(set(ranks) - ids)) or 'none'})")
        if not all(isinstance(r, int) and 1 <= r <= len(ids) for r in ranks.values()):
            raise ActionError(f"submit: ranks must be integers from 1 to {len(ids)}, got {sorted(ranks.values())}")
    if kind in ("edit", "note", "flag") and not isinstance(payload.get("text", payload.get("reason", "")), str):
        raise ActionError(f"{kind}: the text must be a string")


class AnnotationStore:
    """The actions table of one project; safe to share between the server's threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, client_id: str, annotator: str, item_id: str, kind: str, payload: dict) -> tuple[int, bool]:
        """Commit one action; return (its sequence number, whether it was new). The same client_id again
        records nothing and returns the first one's number."""
        text = json.dumps(payload, ensure_ascii=False, sort_keys=True)
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO actions (client_id, annotator, item_id, kind, payload, created) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (client_id) DO NOTHING", (client_id, annotator, str(item_id), kind, text, time.time()))
            new = cursor.rowcount == 1
            seq = self._db.execute("SELECT seq FROM actions WHERE client_id = ?", (client_id,)).fetchone()[0]
        return seq, new

    def actions(self, annotator: str | None = None, item_id: str | None = None) -> list[dict]:
        """Every action (of one annotator, of one item), in the order they were recorded."""
        query, args = "SELECT seq, client_id, annotator, item_id, kind, payload, created FROM actions", []
        where = [(c, v) for c, v in (("annotator", annotator), ("item_id", item_id)) if v is not None]
        if where:
            query += " WHERE " + " AND ".join(f"{c} = ?" for c, _ in where)
            args = [str(v) for _, v in where]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [{"seq": r[0], "client_id": r[1], "annotator": r[2], "item_id": r[3], "kind": r[4],
                 "payload": json.loads(r[5]), "created": r[6]} for r in rows]

    def states(self, annotator: str | None = None) -> dict[tuple[str, str], ItemState]:
        """(annotator, item id) -> the fold of its actions."""
        states: dict[tuple[str, str], ItemState] = {}
        for a in self.actions(annotator):
            states.setdefault((a["annotator"], a["item_id"]), ItemState()).apply(a["kind"], a["payload"])
        return states

    def annotators(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT annotator FROM actions ORDER BY annotator")]

    def judgements(self) -> list[Judgement]:
        """The finished items of every annotator, as the pairs export reads them."""
        return [Judgement(item_id=item, annotator=annotator, status=s.status,
                          ranks=dict(s.ranks) if s.status == "submitted" else {},
                          edit=s.edit if s.status == "submitted" else None)
                for (annotator, item), s in sorted(self.states().items()) if s.status != "open"]

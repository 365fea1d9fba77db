"""A studio project: one folder holding `candidates.jsonl` (from `alignlab data candidates`) and
`annotations.sqlite` (the store), and what the pages and `alignlab data pairs` do with them: the view of
an item for an annotator, an action on it, progress, the pairs export and the agreement report.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

from ..config import ConfigError
from ..datagen.register import file_name_in, register_datasets
from ..datagen.rows import ALPACA_COLUMNS
from ..datagen.runner import read_records
from ..files import write_atomic
from .agreement import agreement_report
from .candidates import CANDIDATES
from .pairs import build_pairs
from .store import DATABASE, DONE, ActionError, AnnotationStore, ItemState, check_action

PAIRS = "pairs.json"
REPORT = "studio_report.json"


def display_order(annotator: str, item_id: str, candidate_ids: list[str]) -> list[str]:
    """The order an annotator sees an item's candidates in: shuffled, the same on every visit."""
    seed = int.from_bytes(hashlib.sha256(f"{annotator}\0{item_id}".encode()).digest()[:8], "big")
    order = list(candidate_ids)
    random.Random(seed).shuffle(order)
    return order


class Project:
    """The candidates and the annotations of one studio folder."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / CANDIDATES
        if not path.is_file():
            raise ConfigError(f"studio_dir {self.folder}: no {CANDIDATES}; make it first with `alignlab data "
                              f"candidates ... output_dir={self.folder}`.")
        self.items = read_records(path)
        if not self.items:
            raise ConfigError(f"studio_dir {self.folder}: {CANDIDATES} has no prompts yet.")
        self.by_id = {str(item["id"]): item for item in self.items}
        self.store = AnnotationStore(self.folder / DATABASE)

    def close(self) -> None:
        self.store.close()

    def candidate_ids(self, item_id: str) -> list[str]:
        return [c["id"] for c in self.item(item_id)["candidates"]]

    def item(self, item_id: str) -> dict:
        try:
            return self.by_id[str(item_id)]
        except KeyError:
            raise ActionError(f"unknown item {item_id!r}") from None

    def state(self, annotator: str, item_id: str) -> ItemState:
        return self.store.states(annotator).get((annotator, str(item_id)), ItemState())

    def next_open(self, annotator: str, after: str | None = None) -> str | None:
        """The first item the annotator has not finished (after `after` when given, wrapping round)."""
        states = self.store.states(annotator)
        ids = [str(item["id"]) for item in self.items]
        start = ids.index(str(after)) + 1 if after is not None and str(after) in ids else 0
        for item_id in ids[start:] + ids[:start]:
            if states.get((annotator, item_id), ItemState()).status == "open":
                return item_id
        return None

    def act(self, annotator: str, client_id: str, item_id: str, kind: str, payload: dict) -> bool:
        """Validate and record one action; return whether it was new (False: a resend already on disk)."""
        if not annotator:
            raise ActionError("no annotator name: log in, or type your name")
        check_action(kind, payload, self.candidate_ids(item_id))
        _, new = self.store.record(client_id, annotator, str(item_id), kind, payload)
        return new

    def open_item(self, annotator: str, item_id: str) -> ItemState:
        """The state of the item about to be shown; its display order is recorded on the first visit."""
        state = self.state(annotator, item_id)
        if not state.order:
            order = display_order(annotator, str(item_id), self.candidate_ids(item_id))
            self.store.record(f"show:{annotator}:{item_id}", annotator, str(item_id), "show", {"order": order})
            state.apply("show", {"order": order})
        return state

    def progress(self) -> dict:
        """Items done (submitted, skipped or flagged) per annotator, and the total."""
        done: dict[str, int] = {}
        for (annotator, _), state in self.store.states().items():
            done[annotator] = done.get(annotator, 0) + (state.status in DONE.values())
        return {"total": len(self.items), "done": done}

    def export(self, dataset_dir: str, register_as: str | None, pair_mode: str, annotator_mode: str) -> dict:
        """Write pairs.json (alpaca ranking rows) and studio_report.json; register the pairs when asked."""
        judgements = self.store.judgements()
        rows, counts = build_pairs(self.items, judgements, pair_mode, annotator_mode)
        if not rows:
            raise ConfigError(f"studio_dir {self.folder}: no preference pairs yet ({_counts_line(counts)}): "
                              "rank some items first.")
        pairs_path = write_atomic(self.folder / PAIRS, json.dumps(rows, ensure_ascii=False, indent=2) + "\n")
        report = {"pair_mode": pair_mode, "annotator_mode": annotator_mode, "counts": counts,
                  "progress": self.progress(), "agreement": agreement_report(judgements), "pairs_file": str(pairs_path)}
        if register_as:
            register_datasets(dataset_dir, {register_as: {
                "file_name": file_name_in(dataset_dir, pairs_path), "ranking": True,
                "columns": {**ALPACA_COLUMNS, "chosen": "chosen", "rejected": "rejected"}}})
            report["registered_as"] = register_as
        write_atomic(self.folder / REPORT, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
        return report


def _counts_line(counts: dict) -> str:
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())


def run_pairs(cfg) -> dict:
    """`alignlab data pairs`: the studio's rankings as a registered preference dataset."""
    s = cfg.studio
    if not s.studio_dir:
        raise ConfigError("`alignlab data pairs` needs `studio_dir`: the folder of candidates.jsonl and "
                          "annotations.sqlite.")
    project = Project(s.studio_dir)
    try:
        report = project.export(cfg.data.dataset_dir, cfg.datagen.register_as, s.pair_mode, s.annotator_mode)
    finally:
        project.close()
    print(f"pairs: {report['counts']['pairs']} pairs in {report['pairs_file']} ({_counts_line(report['counts'])})"
          + (f"; registered as {report['registered_as']!r} in {cfg.data.dataset_dir}/dataset_info.json"
             if report.get("registered_as") else ""), file=sys.stderr, flush=True)
    return report


def view(project: Project, annotator: str, item_id: str | None = None) -> dict:
    """What the Annotate page shows an annotator: the item (default: the first unfinished one), its
    candidates in the annotator's display order with the ranks so far, the edit, status and progress."""
    progress = project.progress()
    item_id = str(item_id) if item_id is not None else project.next_open(annotator)
    base = {"annotator": annotator, "total": progress["total"], "done": progress["done"].get(annotator, 0),
            "per_annotator": progress["done"]}
    if item_id is None:
        return {**base, "finished": True, "item": None}
    item = project.item(item_id)
    state = project.open_item(annotator, item_id)
    texts = {c["id"]: c["text"] for c in item["candidates"]}
    ids = [str(i["id"]) for i in project.items]
    position = ids.index(item_id)
    return {**base, "finished": False, "position": position + 1,
            "prev_id": ids[position - 1] if position else None,
            "next_id": ids[position + 1] if position + 1 < len(ids) else None,
            "item": {"id": item_id, **item["prompt"]},
            "candidates": [{"id": cid, "text": texts[cid], "rank": state.ranks.get(cid)} for cid in state.order],
            "edit": state.edit, "note": state.note, "status": state.status}

"""`alignlab data synth`: questions from templates and variable pools per category; seeded, free of
duplicates (after normalising whitespace), split into train/test, registered as alpaca JSONL."""

from __future__ import annotations

import bisect
import json
import math
import random
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError
from ..files import write_atomic
from .register import check_names_free, file_name_in, register_datasets
from .rows import ALPACA_COLUMNS

DENSE_SHARE = 4  # draw from a full shuffle when the count is at least 1/DENSE_SHARE of the combinations


@dataclass
class Template:
    text: str
    names: list[str]  # its variables, in order of first use
    pools: list[list[str]]  # the values of each variable

    @property
    def size(self) -> int:
        return math.prod(len(pool) for pool in self.pools)

    def render(self, index: int) -> str:
        """The question at `index` of the template's combinations (mixed radix over the pools)."""
        values = {}
        for name, pool in zip(reversed(self.names), reversed(self.pools)):
            index, digit = divmod(index, len(pool))
            values[name] = pool[digit]
        return self.text.format(**values).strip()


@dataclass
class Category:
    name: str
    system: str
    templates: list[Template]
    count: int | None

    def render(self, index: int, offsets: list[int]) -> str:
        t = bisect.bisect_right(offsets, index) - 1
        return self.templates[t].render(index - offsets[t])


def _pools(raw, where: str) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"`{where}` must map variable names to lists of values, got {raw!r}.")
    pools = {}
    for name, values in raw.items():
        if not isinstance(values, list) or not values or any(isinstance(v, (dict, list)) for v in values):
            raise ConfigError(f"`{where}.{name}` must be a non-empty list of values, got {values!r}.")
        pools[str(name)] = [str(v) for v in values]
    return pools


def _template(text, where: str, pools: dict[str, list[str]]) -> Template:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"`{where}` must be non-empty text, got {text!r}.")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as e:
        raise ConfigError(f"`{where}` is not a valid template ({e}); write a literal brace as {{{{ or }}}}.") from None
    names = list(dict.fromkeys(fields))
    for name in names:
        if not name.isidentifier():
            raise ConfigError(f"`{where}`: `{{{name}}}` is not a variable name; use `{{name}}` with a pool of that name.")
        if name not in pools:
            raise ConfigError(f"`{where}` uses `{{{name}}}`, which no pool defines: add `{name}` to the "
                              "category's `pools` or to `synth_pools`.")
    return Template(text, names, [pools[name] for name in names])


def read_categories(d) -> list[Category]:
    """The categories of `synth_categories`, each with its templates bound to its pools (its own first,
    then `synth_pools`), and the number of questions each must produce."""
    if not isinstance(d.synth_categories, dict) or not d.synth_categories:
        raise ConfigError("`alignlab data synth` needs `synth_categories`: a mapping of category names to "
                          "`{system, templates, pools, count}` (see examples/data/kids_clothing/synth.yaml).")
    shared = _pools(d.synth_pools, "synth_pools")
    categories = []
    for name, spec in d.synth_categories.items():
        where = f"synth_categories.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"`{where}` must be a mapping with `templates` (and `system`, `pools`, `count`).")
        unknown = sorted(set(spec) - {"system", "templates", "pools", "count"})
        if unknown:
            raise ConfigError(f"`{where}` has unknown key(s) {', '.join(unknown)}: use system, templates, pools, count.")
        templates = spec.get("templates")
        if not isinstance(templates, list) or not templates:
            raise ConfigError(f"`{where}.templates` must be a non-empty list of question templates.")
        pools = {**shared, **_pools(spec.get("pools"), f"{where}.pools")}
        count = spec.get("count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise ConfigError(f"`{where}.count: {count!r}` must be a positive integer.")
        system = spec.get("system") or ""
        if not isinstance(system, str):
            raise ConfigError(f"`{where}.system` must be text, got {system!r}.")
        categories.append(Category(str(name), system.strip(), [_template(t, f"{where}.templates[{i}]", pools)
                                                                for i, t in enumerate(templates)], count))
    _share_total(categories, d.synth_count)
    return categories


def _share_total(categories: list[Category], total: int | None) -> None:
    """Give the categories without a `count` an even share of what `synth_count` leaves."""
    fixed = sum(c.count for c in categories if c.count is not None)
    open_ = [c for c in categories if c.count is None]
    if total is None:
        if open_:
            raise ConfigError(f"Category `{open_[0].name}` has no `count` and `synth_count` is not set: give each "
                              "category a `count` or set `synth_count` (the total).")
        return
    if total < 1:
        raise ConfigError(f"`synth_count: {total}` must be a positive integer.")
    left = total - fixed
    if (not open_ and left != 0) or left < len(open_):
        raise ConfigError(f"`synth_count: {total}` does not fit the category counts ({fixed} fixed"
                          + (f", {len(open_)} categories to share the rest" if open_ else "") + "): change one of them.")
    for i, category in enumerate(open_):
        category.count = left // len(open_) + (i < left % len(open_))


def _indices(rng: random.Random, size: int, count: int) -> Iterator[int]:
    """Distinct indices below `size` in random order, as many as asked for (all of them at the end)."""
    if count * DENSE_SHARE >= size:
        order = list(range(size))
        rng.shuffle(order)
        yield from order
        return
    seen: set[int] = set()
    while len(seen) < size:
        index = rng.randrange(size)
        if index not in seen:
            seen.add(index)
            yield index


def synthesize(categories: list[Category], seed: int) -> list[dict]:
    """`count` distinct questions per category (distinct across the whole set after normalising whitespace),
    drawn with `random.Random(seed)`: the same config and seed give the same rows."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    for category in categories:
        offsets = [0]
        for template in category.templates:
            offsets.append(offsets[-1] + template.size)
        size, made = offsets[-1], 0
        if size >= category.count:
            for index in _indices(rng, size, category.count):
                text = category.render(index, offsets[:-1])
                key = " ".join(text.split())
                if key in seen:
                    continue
                seen.add(key)
                rows.append({"id": f"{category.name}-{made:04d}", "category": category.name,
                             "system": category.system, "instruction": text, "input": ""})
                made += 1
                if made == category.count:
                    break
        if made < category.count:
            can = f"only {made}" if size >= category.count else f"at most {size}"
            raise ConfigError(f"synth_categories.{category.name}: the templates and pools give {can} distinct "
                              f"questions, but {category.count} are asked for: add templates or pool values, or ask "
                              "for fewer (`count`, `synth_count`).")
    return rows


def split_rows(rows: list[dict], test_size: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out `test_size` rows (a fraction in (0,1) or a count), chosen with the seed; both keep the order."""
    if not test_size:
        return rows, []
    n_test = int(test_size) if test_size >= 1 else math.ceil(test_size * len(rows))
    if test_size < 0 or (test_size >= 1 and not float(test_size).is_integer()) or not 0 < n_test < len(rows):
        raise ConfigError(f"`synth_test_size: {test_size}` leaves no training or no test questions out of "
                          f"{len(rows)}: use a fraction in (0, 1) or a count below {len(rows)}.")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    test = set(order[:n_test])
    return [r for i, r in enumerate(rows) if i not in test], [r for i, r in enumerate(rows) if i in test]


def run_synth(cfg) -> dict[str, Path]:
    """Synthesise, split, write `<register_as>.jsonl` (and `_test.jsonl`) to output_dir (default
    dataset_dir) and register them; nothing is written when the config cannot be met."""
    d, dataset_dir = cfg.datagen, cfg.data.dataset_dir
    if not d.register_as:
        raise ConfigError("`alignlab data synth` needs `register_as`: the dataset name the questions get in "
                          f"{dataset_dir}/dataset_info.json.")
    seed = cfg.resolved.get("seed", 42)
    train, test = split_rows(synthesize(read_categories(d), seed), d.synth_test_size, seed)
    folder = Path(cfg.resolved.get("output_dir") or dataset_dir)
    files = {d.register_as: (folder / f"{d.register_as}.jsonl", train)}
    if test:
        files[f"{d.register_as}_test"] = (folder / f"{d.register_as}_test.jsonl", test)
    columns = {role: column for role, column in ALPACA_COLUMNS.items() if role != "history"}
    entries = {name: {"file_name": file_name_in(dataset_dir, path), "columns": columns}
               for name, (path, _rows) in files.items()}
    check_names_free(dataset_dir, entries)
    for path, rows in files.values():
        write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    info = register_datasets(dataset_dir, entries)
    counts = ", ".join(f"{c} {sum(r['category'] == c for r in train + test)}"
                       for c in dict.fromkeys(r["category"] for r in train + test))
    print(f"synth: {len(train) + len(test)} questions ({counts}): "
          + "; ".join(f"{len(rows)} in {path} as `{name}`" for name, (path, rows) in files.items())
          + f"; registered in {info}", file=sys.stderr)
    return {name: path for name, (path, _rows) in files.items()}

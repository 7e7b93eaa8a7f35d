"""Merge source labels into new ones by name (e.g. NIH Nodule|Mass → CheXpert's Lung Lesion)."""

from __future__ import annotations

import numpy as np

from pipelines.data.records import Records
from pipelines.errors import RareganError


def parse_label_map(text: str) -> dict[str, list[str]]:
    """Parse "New=A|B;Other=C" into {"New": ["A", "B"], "Other": ["C"]}."""
    mapping: dict[str, list[str]] = {}
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        new, sep, sources = item.partition("=")
        new = new.strip()
        names = [s.strip() for s in sources.split("|") if s.strip()]
        if not sep or not new or not names:
            raise RareganError(
                f"label map item {item!r} is not NEW=SOURCE|SOURCE; "
                "write e.g. 'Lung Lesion=Nodule|Mass;Pleural Other=Pleural_Thickening'"
            )
        if new in mapping:
            raise RareganError(f"label map names {new!r} twice; give each new label once")
        mapping[new] = names
    if not mapping:
        raise RareganError(f"label map {text!r} is empty; write e.g. 'Lung Lesion=Nodule|Mass'")
    return mapping


def map_labels(
    records: Records, mapping: dict[str, list[str]], keep_unmapped: bool = True
) -> Records:
    """New label = 1 if any source is 1, NaN if none is 1 and any is NaN, else 0; sources dropped.

    Output labels keep the source order: each sits where its first source label was.
    """
    known = list(records.label_names)
    for new, sources in mapping.items():
        for source in sources:
            if source not in known:
                raise RareganError(
                    f"label map {new}={'|'.join(sources)}: unknown source label {source!r} in "
                    f"{records.source} data; known labels: {', '.join(known)}"
                )
    mapped = {s for sources in mapping.values() for s in sources}
    kept = [name for name in known if name not in mapped] if keep_unmapped else []
    clash = [new for new in mapping if new in kept]
    if clash:
        raise RareganError(
            f"label map creates {clash[0]!r}, which is also an unmapped label; "
            "rename it or map the existing one too"
        )
    position = {name: known.index(name) for name in kept}
    position |= {new: min(known.index(s) for s in sources) for new, sources in mapping.items()}
    out_names = sorted(position, key=lambda name: position[name])

    frame = records.frame.drop(columns=known)
    values = records.labels
    columns = {}
    for name in out_names:
        idx = [known.index(s) for s in mapping.get(name, [name])]
        block = values[:, idx]
        merged = np.where(np.isnan(block).any(axis=1), np.nan, 0.0)
        merged[(block == 1.0).any(axis=1)] = 1.0
        columns[name] = merged.astype(np.float32)
    at = frame.columns.get_loc("synthetic") + 1
    for offset, name in enumerate(out_names):
        frame.insert(at + offset, name, columns[name])

    task = records.task
    if task != "multilabel":
        if not (np.nansum(frame[out_names].to_numpy(), axis=1) == 1).all():
            raise RareganError(
                f"label map {mapping} leaves {records.source} rows with no class or two classes; "
                "map every class exactly once (or keep the unmapped ones)"
            )
        if len(out_names) == 2:
            task = "binary"
        elif len(out_names) < 2:
            raise RareganError(f"label map {mapping} leaves fewer than two classes")
    info = dict(records.info) | {"label_map": {k: list(v) for k, v in mapping.items()}}
    return Records(frame, out_names, task, records.source, records.root, info)

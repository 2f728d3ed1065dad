"""The AudioSet ontology: parents, children and one-line descriptions of the sound classes YAMNet names.

Search uses it three ways (see :mod:`soundscope.search`):

* a label stands for its whole subtree: an item's score for *Livestock* is the highest of *Livestock*,
  *Cattle*, *Moo*, *Sheep*, ... (the tagger often fires the specific class and not its parent);
* categories the tagger has no output for (*Human sounds*, *Natural sounds*, *Domestic sounds*) become
  matchable labels whose score is the highest of their descendants;
* each class's description is one more phrasing to match queries against.

The ontology file ships in ``data/vocab/audioset_ontology.json`` (CC BY-SA 4.0, Google; see
``AUDIOSET_ONTOLOGY.txt``). Labels are joined to it by name: YAMNet's display names are its node names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

ONTOLOGY_FILE = Path(__file__).parent / "data" / "vocab" / "audioset_ontology.json"

# Categories with no tagger output that a user may ask for. The rest of the ontology's output-less nodes
# ("Sounds of things", "Source-ambiguous sounds", "Onomatopoeia", ...) are bookkeeping, not things people
# search for, and would only add near-universal pseudo-labels.
CATEGORIES = (
    "Human sounds",
    "Human voice",
    "Respiratory sounds",
    "Human locomotion",
    "Digestive",
    "Human group actions",
    "Natural sounds",
    "Non-motorized land vehicle",
    "Domestic sounds, home sounds",
    "Generic impact sounds",
    "Brief tone",
    "Background noise",
)


@dataclass(frozen=True)
class Node:
    id: str
    name: str
    description: str
    children: tuple[str, ...]


@dataclass(frozen=True)
class LabelTree:
    """A label vocabulary seen through the ontology.

    ``names`` (m,): the vocabulary's labels (first ``n``), then the :data:`CATEGORIES` it has
    descendants of. ``groups[i]``: indices into the first ``n`` labels whose highest score is entry
    ``i``'s score (itself and its descendants; for a category only its descendants).
    ``descriptions[i]``: the ontology's one-line description ('' when the label is not in it).
    ``depth[i]``: 0 for a root, 1 for its children, ... (-1 when not in the ontology)."""

    names: tuple[str, ...]
    n: int
    groups: tuple[np.ndarray, ...]
    descriptions: tuple[str, ...]
    depth: tuple[int, ...]


@lru_cache(maxsize=1)
def nodes() -> dict[str, Node]:
    """Ontology node id -> :class:`Node`."""
    raw = json.loads(ONTOLOGY_FILE.read_text(encoding="utf-8"))
    return {x["id"]: Node(x["id"], x["name"], x["description"], tuple(x["child_ids"])) for x in raw}


def descendants(node_id: str) -> set[str]:
    """Ids of every node below ``node_id`` (children, their children, ...)."""
    all_nodes, out, todo = nodes(), set(), [node_id]
    while todo:
        for c in all_nodes[todo.pop()].children:
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


@lru_cache(maxsize=1)
def _depths() -> dict[str, int]:
    all_nodes = nodes()
    children = {c for n in all_nodes.values() for c in n.children}
    depth: dict[str, int] = {}
    level = [i for i in all_nodes if i not in children]
    d = 0
    while level:
        nxt = []
        for i in level:
            if i not in depth:
                depth[i] = d
                nxt.extend(all_nodes[i].children)
        level, d = nxt, d + 1
    return depth


@lru_cache(maxsize=8)
def label_tree(labels: Sequence[str]) -> LabelTree:
    """The vocabulary ``labels`` (a tuple of display names) with subtree groups and categories."""
    labels = tuple(labels)
    all_nodes = nodes()
    by_name = {n.name: i for i, n in all_nodes.items()}
    position = {name: i for i, name in enumerate(labels)}
    depth_of = _depths()
    names, groups, descriptions, depth = list(labels), [], [], []
    for name in labels:
        node = by_name.get(name)
        below = (
            [position[all_nodes[d].name] for d in descendants(node) if all_nodes[d].name in position]
            if node
            else []
        )
        groups.append(np.array(sorted({position[name], *below}), np.int64))
        descriptions.append(all_nodes[node].description if node else "")
        depth.append(depth_of.get(node, -1) if node else -1)
    for name in CATEGORIES:
        node = by_name.get(name)
        if node is None or name in position:
            continue
        below = sorted({position[all_nodes[d].name] for d in descendants(node) if all_nodes[d].name in position})
        if len(below) < 2:
            continue
        names.append(name)
        groups.append(np.array(below, np.int64))
        descriptions.append(all_nodes[node].description)
        depth.append(depth_of.get(node, -1))
    return LabelTree(tuple(names), len(labels), tuple(groups), tuple(descriptions), tuple(depth))

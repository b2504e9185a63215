"""A task's view of a dataset: only its classes, labels remapped to global class ids."""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from ..errors import StprError


class TaskSubset:
    """The samples of `dataset` whose class is in `class_ids`, labelled with global ids.

    Global id = the class's position in the order classes are learned, so logits over
    "every class seen so far" are a prefix of the text embeddings.
    """

    def __init__(self, dataset: Any, class_ids: Sequence[int], global_ids: Sequence[int]) -> None:
        self.dataset = dataset
        self.label_map = dict(zip(class_ids, global_ids))
        self.indices = [i for i, t in enumerate(dataset.targets) if t in self.label_map]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        frames, label = self.dataset[self.indices[i]]
        return frames, self.label_map[label]


def check_classes_present(dataset: Any, class_ids: Sequence[int], split: str) -> None:
    """Refuse a task with a class that has no videos: it could be neither learned nor scored."""
    counts = Counter(dataset.targets)
    empty = [dataset.classes[c] for c in class_ids if counts.get(c, 0) == 0]
    if empty:
        raise StprError(
            f"class(es) {', '.join(repr(e) for e in empty)} have no {split} videos; add videos to them "
            "or drop them from the dataset folder / split files"
        )

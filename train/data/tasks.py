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


class HeadViews:
    """`head.views`: every temporal view (`dataset.views`) of a task's clips, as `(frames of
    the view, global label, clip_key of the clip's first view, whether it is that first view)`.
    With views, the head's rows are these, not the clips' segment centres: the very rows
    `stpr-learn --views` reads on the device. Each carries its clip's key, as crop rows do,
    so the lambda rule's holdout never splits a clip from its views; the first view is the
    clip's own row (the rule sees that one)."""

    def __init__(self, subset: TaskSubset, views: int) -> None:
        self.subset, self.views = subset, int(views)
        ds = subset.dataset
        self.items = [(i, j) for i in subset.indices for j in range(ds.view_count(i, self.views))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, n: int) -> tuple[Any, int, int, bool]:
        import torch  # the PyTorch learner's loader; the torch-free run reads `dataset.views` itself

        from ..analytic_fit_numpy import clip_key

        i, j = self.items[n]
        views = self.subset.dataset.views(i, self.views)
        label = self.subset.label_map[self.subset.dataset.targets[i]]
        return torch.from_numpy(views[j]), label, clip_key(views[0]), j == 0


def check_classes_present(dataset: Any, class_ids: Sequence[int], split: str) -> None:
    """Refuse a task with a class that has no videos: it could be neither learned nor scored."""
    counts = Counter(dataset.targets)
    empty = [dataset.classes[c] for c in class_ids if counts.get(c, 0) == 0]
    if empty:
        raise StprError(
            f"class(es) {', '.join(repr(e) for e in empty)} have no {split} videos; add videos to them "
            "or drop them from the dataset folder / split files"
        )

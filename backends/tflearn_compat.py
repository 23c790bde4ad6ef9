"""What TFLearn 0.5.0 needs restored before it can be imported on current libraries.

- ``tensorflow.python.util.nest.is_sequence`` was removed from TensorFlow; its
  successor is ``is_nested`` (tflearn's recurrent layers import the old name).
- ``PIL.Image.ANTIALIAS`` was removed in Pillow 10; ``LANCZOS`` is the same filter
  (tflearn's data utilities use it as a default argument, evaluated at import).

And one fix for reproducibility: TFLearn's batch-id thread hands out *views* of its
index array and, running ahead, reshuffles that array in place at each epoch's end,
so batches still queued change under the feeder and the same seed gives different
runs. ``make_batches_reproducible`` hands out copies instead.

``tests/models/test_tflearn_compat.py`` fails when either name comes back on its own (so
this module can go) or when the import stops working with them restored.
"""
from __future__ import annotations


def missing_names() -> list[str]:
    """Names TFLearn imports that the installed libraries no longer provide."""
    from PIL import Image
    from tensorflow.python.util import nest

    missing = []
    if not hasattr(nest, "is_sequence"):
        missing.append("tensorflow.python.util.nest.is_sequence")
    if not hasattr(Image, "ANTIALIAS"):
        missing.append("PIL.Image.ANTIALIAS")
    return missing


def restore_removed_names() -> None:
    from PIL import Image
    from tensorflow.python.util import nest

    if not hasattr(nest, "is_sequence"):
        nest.is_sequence = nest.is_nested
    if not hasattr(Image, "ANTIALIAS"):
        Image.ANTIALIAS = Image.Resampling.LANCZOS


def make_batches_reproducible(data_flow) -> None:
    original = data_flow.FeedDictFlow.next_batch_ids
    if getattr(original, "copies_ids", False):
        return

    def next_batch_ids(self):
        ids = original(self)
        return ids if ids is False else ids.copy()

    next_batch_ids.copies_ids = True
    data_flow.FeedDictFlow.next_batch_ids = next_batch_ids


def import_tflearn():
    restore_removed_names()
    import tflearn
    from tflearn import data_flow

    make_batches_reproducible(data_flow)
    return tflearn

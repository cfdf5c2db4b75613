"""Pure functions behind the widget notebooks of ``notebooks/explore/``.

Each takes plain values (images, labels, a recipe, resolutions) and returns
images, arrays or DataFrames, using timm's own pieces, so what a slider shows is
what training does. The widget cells are thin glue over these.

- ``images``: sample photos (scikit-image's bundled colour photos) or a dataset's images
- ``augment``: RandAugment as timm applies it, RandomResizedCrop, mixup and CutMix
- ``losses``: BCE against softmax cross-entropy on soft targets: losses, gradients, targets
- ``resolution``: the train/test apparent object size discrepancy (FixRes)
- ``schedule``: a recipe's LR schedule at any batch size, and the A1/A2/A3 cost
- ``change``: an explorer's widget state as a change to its recipe (YAML lines, ``--set`` flags, ``recipe.replace``),
  validated by the recipe schema
- ``trial``: a short run of a recipe with such a change, at a stated scale, in the background (one at a time),
  beside the recipe's reference run at that scale (run once, reused)
"""

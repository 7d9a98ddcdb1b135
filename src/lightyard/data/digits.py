"""scikit-learn's bundled 8×8 handwritten digits: the embedded default, no download needed."""

from __future__ import annotations

from functools import cached_property

import numpy as np
from sklearn.datasets import load_digits

from lightyard.data.base import ImageDataModule, Splits
from lightyard.data.datasets import ArrayImages
from lightyard.data.preprocess import PreprocessSpec

DIGITS_MAX = 16.0  # scikit-learn stores the digits as integers 0..16


class DigitsDataModule(ImageDataModule):
    """1,797 grayscale digits, split train/val/test by `split_seed` (stratified).

    The 0..16 intensities are scaled to uint8 images so that a digit saved as a PNG file and read back
    through the preprocessing spec gives exactly the tensor the model was trained on.
    """

    materialize_deterministic = True

    @cached_property
    def samples(self) -> ArrayImages:
        digits = load_digits()
        pixels = np.rint(digits.images * (255.0 / DIGITS_MAX)).astype(np.uint8)
        return ArrayImages(pixels, digits.target)

    @cached_property
    def indices(self) -> tuple[list[int], list[int], list[int]]:
        return self.split_three_ways(self.samples.labels)

    @cached_property
    def spec(self) -> PreprocessSpec:
        train = self.samples.images[self.indices[0]].astype(np.float64) / 255.0
        return PreprocessSpec(
            height=8,
            width=8,
            channels=1,
            mean=(round(float(train.mean()), 6),),
            std=(round(float(train.std()), 6),),
            class_names=tuple(str(d) for d in range(10)),
        )

    def load_splits(self) -> Splits:
        train, val, test = self.indices
        return Splits(self.samples, train, self.samples, val, self.samples, test)

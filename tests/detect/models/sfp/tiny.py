"""Tiny SfP training settings shared by the train, export and predict tests."""
from polar_detect.models.sfp.train import preset


def tiny_preset(**kw):
    """2 epochs of a 4/8-wide net on 12x16 crops, half the batches through the DoFP sensor model."""
    return preset("tiny", **{"widths": (4, 8), "epochs": 2, "batch_size": 3, "sensor_fraction": 0.5,
                             "crop": (12, 16), **kw})

"""The built-in stages; importing this package registers them (`mmfs.train.stage.STAGES`)."""

from mmfs.train.stages import adapt, base, encoder, mapper, prior  # noqa: F401  (each registers its stage)

"""Input pipelines: sources (`sources`), the papers' preprocessing (`transforms`) and one
grain pipeline for all of them (`pipeline`)."""

from score_jax.data.pipeline import BadImageCounter, load_images, make_train_dataset, preview
from score_jax.data.sources import ImageFilesSource, make_source
from score_jax.data.transforms import BadImageError

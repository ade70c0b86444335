"""Using trained weights: load a Stylizer, pick styles, stylize photos and videos, measure the results.

models (files -> ready networks), latents (saved w+ styles), styles (CLIP prompts and references -> styles),
pipeline (aligned faces + styles -> images), files (photos on disk -> stylized files), video, stylize (a
StylizeRequest end to end), evaluate, metrics. `mmfs adapt` trains, so it lives in `mmfs.train.adapt`.
Nothing under `mmfs.train` imports from here.
"""

"""Codec quality: the metrics (metrics.py, spectral.py) that training's periodic evaluation and
`python -m fastcodec.eval` share, and that command's scoring and reports."""

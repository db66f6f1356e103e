"""Thin PyTorch glue: scores from weights or data, masks onto modules, subsets of datasets."""

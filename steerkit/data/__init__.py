"""Data: the contrastive pair, readers of public formats, checks and splits, the dataset registry."""

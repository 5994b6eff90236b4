"""Random CAM logits shared by the tests of the CAM poolings (graphwsss.losses)."""

import torch


def random_logits(batch=2, channels=4, height=5, width=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator)

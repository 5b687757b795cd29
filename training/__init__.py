"""pulmoseg training: phantom data, datasets, networks, losses, semi-supervised training, export."""

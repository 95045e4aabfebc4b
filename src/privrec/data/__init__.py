"""Layer 3: vocabularies, the InteractionDataset, dataset loaders, splitters."""

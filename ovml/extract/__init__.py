"""Stage 1: CLIP backbone, text embeddings, dataset adapters and the extraction runner."""

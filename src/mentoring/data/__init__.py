"""Data: manifests, image store, torch datasets and samplers."""

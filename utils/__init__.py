"""Shared helpers: paths and the artifact root, errors, run metadata, seeding, model loading."""

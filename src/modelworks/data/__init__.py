"""Data layer: sources, versioned Parquet datasets, profiles, validation, transforms, lineage."""

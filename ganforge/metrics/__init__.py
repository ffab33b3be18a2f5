"""Sample quality: feature extractors (`features`), pure metric functions (`functions`), and the
evaluation that joins them (`evaluate`)."""

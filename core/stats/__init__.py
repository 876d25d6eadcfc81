"""Statistics: modal mineralogy, grain sizes, mineral associations, occurrence and liberation from class masks."""
from .measure import (DIRECTIONS, PERIMETER_METHODS, GrainTable, MaskStats, ParticleTable, boundary_length,
                      combine, measure)
from .summary import (BORDER_POLICIES, SIZE_SERIES, Options, association, class_index, d_values, grain_summary,
                      group_samples, image_entry, liberation, modal, occurrence, sample_comparison, select_grains,
                      size_classes, summarize, tables)

__all__ = [
    "DIRECTIONS", "PERIMETER_METHODS", "BORDER_POLICIES", "SIZE_SERIES", "GrainTable", "ParticleTable", "MaskStats",
    "Options", "measure", "combine", "boundary_length", "modal", "select_grains", "class_index", "size_classes",
    "d_values", "grain_summary", "association", "occurrence", "liberation", "image_entry", "summarize",
    "group_samples", "tables", "sample_comparison",
]

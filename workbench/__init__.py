"""Interactive widgets and plotly figures for COLAM runs (imports colam_core, never the reverse)."""

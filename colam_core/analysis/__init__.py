"""Analysis of trained runs: representations, templates, distances, calibration,
soft-label structure, learning curves and results tables.

Everything here returns numpy arrays, plain dicts or pandas DataFrames; nothing
plots. Figures live in ``workbench`` and are drawn from these outputs.

Two kinds of functions:

* **pure functions on arrays** (``template_plane``, ``template_distances``,
  ``adt_adc``, ``expected_calibration_error``, ``sharpness``, ...): no run, no
  model, easy to test by hand;
* **run helpers** (``*_for_run``, ``EmbeddingCache``) that take a loaded run
  (``runs.load_run``; anything with ``.model(stage)``, ``.data(split)``,
  ``.class_names`` and ``.path`` will do), compute penultimate features in
  batches under ``torch.no_grad`` and call the pure functions.

Conventions
-----------
* A soft-label matrix is C x C with row ``c`` the soft label of class ``c``.
* A *template* is a row of the final linear layer (``model.classifier.weight``).
* Class columns hold integer class ids (``class``, ``other``, ``label``); the
  matching ``*_name`` columns hold display names (``str(id)`` when unknown).
* Stages are named like the keys of ``soft_labels.npz`` (``"stage_1"``, ...) in
  the dict-based soft-label functions; insertion order of the dict is the
  stage order.

Sweeps and the paper's comparison tables live in ``colam_core.sweeps``
(``Sweep``, ``interval_peers_grid``, ``temperature_sweep``, ``methods_seeds``,
``grid_table``, ``temperature_table``, ``methods_table``); the expected
accuracy of soft-label checkpoints (paper Fig. 1b), which trains, is
``sweeps.expected_accuracy`` (analysis never trains). ``results_table`` (in ``tables``) is the
mean ± std table those build on.

Layout
------
* ``features``: ``penultimate_features``, ``logits``, ``sample_indices``;
* ``templates``: ``template_plane``, ``template_distances``, ``adt_adc`` and
  their ``*_for_run``;
* ``embedding``: ``embed``, ``EmbeddingCache``;
* ``calibration``: ``expected_calibration_error`` (from ``metrics``),
  ``reliability_bins``, ``predict_probs``, ``calibration_for_run``;
* ``soft_labels``: ``soft_labels_by_stage``, ``top_k_soft``,
  ``superclass_share``, ``sharpness``, ``drift``, ``own_mass_table``, ``erasures_by_stage`` (erased
  classes), ``target_entropy`` (the training-loss floor of soft targets);
* ``tables``: ``learning_curves``, ``results_table``;
* ``_common``: private helpers shared by the above.
"""

from __future__ import annotations

from .calibration import calibration_for_run, expected_calibration_error, predict_probs, reliability_bins
from .embedding import EmbeddingCache, embed
from .features import logits, penultimate_features, sample_indices
from .soft_labels import (
    drift,
    erasures_by_stage,
    own_mass_table,
    sharpness,
    soft_labels_by_stage,
    superclass_share,
    superclass_share_summary,
    target_entropy,
    top_k_soft,
)
from .tables import learning_curves, results_table
from .templates import (
    adt_adc,
    adt_adc_for_run,
    template_distances,
    template_distances_for_run,
    template_plane,
    template_plane_for_run,
)

__all__ = [
    # features and sampling
    "penultimate_features",
    "logits",
    "sample_indices",
    # template plane (Mueller et al. 2019; COLAM Fig. 2)
    "template_plane",
    "template_plane_for_run",
    # embeddings
    "embed",
    "EmbeddingCache",
    # distances (COLAM Table 5, Fig. 3)
    "template_distances",
    "template_distances_for_run",
    "adt_adc",
    "adt_adc_for_run",
    # calibration
    "expected_calibration_error",
    "reliability_bins",
    "predict_probs",
    "calibration_for_run",
    # soft-label structure
    "soft_labels_by_stage",
    "top_k_soft",
    "superclass_share",
    "superclass_share_summary",
    "sharpness",
    "drift",
    "own_mass_table",
    "erasures_by_stage",
    "target_entropy",
    # curves and tables
    "learning_curves",
    "results_table",
]

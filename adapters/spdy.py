"""SPDY on any model: timing and error databases, coefficient search, apply, measure.

Every function takes a :class:`~pruneopt.adapters.units.Structure` (any torch model's
prunable units and their surgery; :class:`BertStructure` for BERT encoders, which a bare
BERT model or SentenceTransformer is wrapped in automatically). The BERT case is described
below; for other models see :mod:`~pruneopt.adapters.spdy_generic` (timing a unit's modules
in the model pruned at that unit, errors by a loss per model family, an optional
``repair`` of every pruned candidate before it is scored).

Reference: Frantar & Alistarh, "SPDY: Accurate Pruning with Speedup Guarantees" (ICML 2022).

This module is the one import for the whole method; each job lives in its own module:

- ``units``: the :class:`Structure` contract; ``bert_structure``: BERT as one;
- ``spdy_generic``: the timing and error databases of any structure; ``calib_loss``: the
  calibration losses by model family (cosine, classifier KL, next-token KL);
- ``bert_surgery``: prunable units of a BERT encoder (heads, FFN neurons), their magnitude
  scores, smaller dense copies, temporary unit swaps;
- ``calibration``: tokenized batches, forward passes, embeddings, cosine to the dense model;
- ``spdy_table``: :class:`SpdyTable` (levels, times, errors, the layer-budget problem, JSON);
- ``spdy_timing``: the timing database and end-to-end speedup measurements;
- ``spdy_errors``: the error database;
- ``spdy_search``: the coefficient search (optionally scoring candidates after
  reconstruction), apply, :func:`spdy_prune`;
- ``spdy_correction``: the speed correction on measured end-to-end times;
- ``spdy_baselines``: uniform pruning and unstructured (CSR) timing;
- ``reconstruction``: the layer-wise least-squares refit of the shrunk matrices;
- ``pruned_models``: save a structurally pruned model so that it loads back
  (``SentenceTransformer(folder, trust_remote_code=True)``), and load it.

(all under ``pruneopt.adapters``). The names below are re-exported here unchanged.

**Prunable units.** Every transformer block of a Hugging Face ``BertModel`` (alone, or inside
a ``sentence_transformers.SentenceTransformer`` such as all-MiniLM-L6-v2) gives two units:
its self-attention (level = number of heads removed) and its feed-forward network (level =
number of intermediate neurons removed). Pruning is *structured*: what is left are smaller
dense matrices, so every level saves real time on a CPU with the ordinary dense kernels.

**Timing database** (:func:`timing_database`): each unit's forward time at each level,
measured on this CPU on the calibration batches, plus the dense end-to-end time and the time
outside the units; a speedup target ``s`` becomes the budget
``sum_units time <= dense / s - base``.

**Error database** (:func:`error_database`): each unit pruned alone to each level, scored on
calibration sentences by the embedding loss ``1 - mean_i cos(f(x_i), f_dense(x_i))``.

**Search** (:func:`spdy_search`): SPDY's per-unit coefficients rescale the error database;
every candidate is solved by the exact layer-budget DP and scored by the calibration loss of
the stitched model (``reconstruct=True``: also after the layer-wise refit of its shrunk
matrices on sentences of their own).

**Apply, measure, correct** (:func:`spdy_prune`): the levels are applied to a copy of the
model, the end-to-end speedup is measured, and the table target is moved down or up
(:func:`correct_target`) until the measured speedup meets the target; of the measured
answers, the one that meets it with the least calibration loss is returned.
"""

from pruneopt.adapters.bert_structure import BertStructure, as_structure
from pruneopt.adapters.bert_surgery import (
    Unit,
    UnitSwap,
    as_unit,
    bert_of,
    head_scores,
    neuron_scores,
    prune_units,
    pruned_attention,
    pruned_ffn,
    units_of,
)
from pruneopt.adapters.calib_loss import default_loss, model_loss
from pruneopt.adapters.calibration import (
    cosine_to,
    embed,
    make_batches,
    tensor_batches,
    tokenized_batches,
)
from pruneopt.adapters.pruned_models import load_pruned, save_pruned
from pruneopt.adapters.reconstruction import DenseTargets, reconstruct, reconstructed_loss
from pruneopt.adapters.spdy_baselines import (
    csr_linear_timing,
    uniform_at_speedup,
    uniform_curve,
    uniform_removed,
)
from pruneopt.adapters.spdy_correction import correct_target
from pruneopt.adapters.spdy_errors import error_database
from pruneopt.adapters.spdy_search import (
    SearchResult,
    apply_levels,
    levels_for,
    spdy_prune,
    spdy_search,
    stitched_loss,
)
from pruneopt.adapters.spdy_table import SpdyTable
from pruneopt.adapters.spdy_timing import default_levels, measure_speedup, timing_database

__all__ = [
    "BertStructure",
    "DenseTargets",
    "SearchResult",
    "SpdyTable",
    "Unit",
    "UnitSwap",
    "apply_levels",
    "as_structure",
    "as_unit",
    "bert_of",
    "correct_target",
    "cosine_to",
    "csr_linear_timing",
    "default_levels",
    "default_loss",
    "embed",
    "error_database",
    "head_scores",
    "levels_for",
    "load_pruned",
    "make_batches",
    "measure_speedup",
    "model_loss",
    "neuron_scores",
    "prune_units",
    "pruned_attention",
    "pruned_ffn",
    "reconstruct",
    "reconstructed_loss",
    "save_pruned",
    "spdy_prune",
    "spdy_search",
    "stitched_loss",
    "tensor_batches",
    "timing_database",
    "tokenized_batches",
    "uniform_at_speedup",
    "uniform_curve",
    "uniform_removed",
    "units_of",
]

"""The pruning decisions, each written as the optimization problem it is."""

from pruneopt.formulations.base import Formulation
from pruneopt.formulations.coverage import CoverageSelection, CoverSelection, coverage_curve
from pruneopt.formulations.layer_budget import LayerBudget
from pruneopt.formulations.mmd import MMDSelection
from pruneopt.formulations.nm import NMMask, TransposableNM, mask_diversity
from pruneopt.formulations.reconstruction import (
    JointReconstruction,
    MaskedReconstruction,
    saliency,
)
from pruneopt.formulations.standard import MILPExportable, MILPForm

__all__ = [
    "CoverageSelection", "CoverSelection", "coverage_curve",
    "LayerBudget",
    "MMDSelection",
    "NMMask",
    "TransposableNM",
    "mask_diversity",
    "JointReconstruction", "MaskedReconstruction", "saliency",
    "Formulation", "MILPExportable", "MILPForm"]

"""The pruning decisions, each written as the optimization problem it is."""

from pruneopt.formulations.base import Formulation
from pruneopt.formulations.mmd import MMDSelection
from pruneopt.formulations.standard import MILPExportable, MILPForm

__all__ = ["Formulation", "MILPExportable", "MILPForm", "MMDSelection"]

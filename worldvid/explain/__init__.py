"""Explaining a world model's predictions: what it takes from its context frames, what from its actions.

``factorial``: the 2x2 decomposition of the predicted change into frames, actions and their interaction.
``attribution``: pixel and action attributions of the next frame (integrated gradients, occlusion) and their
deletion-curve faithfulness check. ``model_fns``: a WorldModel as the functions both call. ``report``: pictures
and the HTML page. ``worldvid explain`` (``worldvid.experiments.explain``) runs them all on a trained run.
"""

from worldvid.explain.attribution import (
    Attribution,
    Inputs,
    attribution_order,
    curve_area,
    deletion_curve,
    integrated_gradients,
    occlusion,
    random_order,
)
from worldvid.explain.factorial import (
    Cells,
    Projections,
    action_baseline,
    bootstrap_shares,
    imagine_cells,
    static_context,
)
from worldvid.explain.model_fns import model_next_frame, model_rollout

__all__ = [
    "Attribution",
    "Cells",
    "Inputs",
    "Projections",
    "action_baseline",
    "attribution_order",
    "bootstrap_shares",
    "curve_area",
    "deletion_curve",
    "imagine_cells",
    "integrated_gradients",
    "model_next_frame",
    "model_rollout",
    "occlusion",
    "random_order",
    "static_context",
]

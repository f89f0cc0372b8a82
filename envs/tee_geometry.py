"""The T block's geometry: its two rectangles, its outline, and how much of one T pose another covers.

Poses are (x, y, yaw) of the T's centroid in world units and radians. In the T's own frame the bar lies along
x above the stem, which hangs along -y; the numbers match ``assets/push_t.xml``.
"""

from __future__ import annotations

import numpy as np

BAR_HALF = (0.15, 0.04)
"""Half-sizes (x, y) of the bar, in the T's frame."""
STEM_HALF = (0.04, 0.11)
"""Half-sizes (x, y) of the stem."""
BAR_Y, STEM_Y = 0.06346, -0.08654
"""Centre heights of the bar and the stem (the T's centroid is the origin)."""
AREA = 4 * (BAR_HALF[0] * BAR_HALF[1] + STEM_HALF[0] * STEM_HALF[1])
"""Area of the T, square units."""
RADIUS = float(np.hypot(STEM_HALF[0], STEM_Y - STEM_HALF[1]))
"""Distance from the centroid to the farthest point of the T (the stem's tip corners)."""

OUTLINE = np.array([
    [-BAR_HALF[0], BAR_Y + BAR_HALF[1]], [-BAR_HALF[0], BAR_Y - BAR_HALF[1]],
    [-STEM_HALF[0], BAR_Y - BAR_HALF[1]], [-STEM_HALF[0], STEM_Y - STEM_HALF[1]],
    [STEM_HALF[0], STEM_Y - STEM_HALF[1]], [STEM_HALF[0], BAR_Y - BAR_HALF[1]],
    [BAR_HALF[0], BAR_Y - BAR_HALF[1]], [BAR_HALF[0], BAR_Y + BAR_HALF[1]],
])
"""float64 [8, 2]: the T's outline in its own frame, counter-clockwise from the bar's top-left corner."""


def _rectangle(half: tuple[float, float], centre_y: float) -> np.ndarray:
    hx, hy = half
    return np.array([[-hx, centre_y - hy], [hx, centre_y - hy], [hx, centre_y + hy], [-hx, centre_y + hy]])


RECTANGLES = (_rectangle(BAR_HALF, BAR_Y), _rectangle(STEM_HALF, STEM_Y))
"""The bar and the stem as counter-clockwise corners float64 [4, 2] in the T's frame (they share one edge)."""


def to_world(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Points float [..., 2] in the T's frame -> world float64 [..., 2] for ``pose`` (x, y, yaw)."""
    x, y, yaw = np.asarray(pose, dtype=np.float64)
    c, s = np.cos(yaw), np.sin(yaw)
    p = np.asarray(points, dtype=np.float64)
    return np.stack([c * p[..., 0] - s * p[..., 1] + x, s * p[..., 0] + c * p[..., 1] + y], axis=-1)


def wrap_angle(angle: float | np.ndarray) -> float | np.ndarray:
    """An angle (or array of them) wrapped to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def _clip(subject: np.ndarray, clipper: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the convex polygon ``subject`` [N, 2] cut to the convex ccw polygon ``clipper``."""
    out = subject
    for i in range(len(clipper)):
        a, b = clipper[i], clipper[(i + 1) % len(clipper)]
        if len(out) == 0:
            break
        edge = b - a
        side = edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0])  # >= 0: inside (left of a->b)
        kept = []
        for j in range(len(out)):
            p, q, sp, sq = out[j], out[(j + 1) % len(out)], side[j], side[(j + 1) % len(out)]
            if sp >= 0:
                kept.append(p)
            if (sp >= 0) != (sq >= 0):
                kept.append(p + (q - p) * (sp / (sp - sq)))
        out = np.array(kept).reshape(-1, 2)
    return out


def _area(polygon: np.ndarray) -> float:
    if len(polygon) < 3:
        return 0.0
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def coverage(pose: np.ndarray, goal_pose: np.ndarray) -> float:
    """Share of the goal T's area that the T at ``pose`` covers, in [0, 1] (Push-T's success measure).

    The T is the union of two rectangles that share only an edge, so the overlap of two Ts is the sum of the
    four rectangle-rectangle overlaps.
    """
    block = [to_world(r, pose) for r in RECTANGLES]
    goal = [to_world(r, goal_pose) for r in RECTANGLES]
    overlap = sum(_area(_clip(a, b)) for a in block for b in goal)
    return float(min(overlap / AREA, 1.0))


def outline_normals() -> tuple[np.ndarray, np.ndarray]:
    """(edge midpoints float64 [8, 2], outward unit normals float64 [8, 2]) of ``OUTLINE``, in the T's frame."""
    a, b = OUTLINE, np.roll(OUTLINE, -1, axis=0)
    edge = b - a
    normals = np.stack([edge[:, 1], -edge[:, 0]], axis=1)  # ccw outline: (dy, -dx) points outward
    return (a + b) / 2.0, normals / np.linalg.norm(normals, axis=1, keepdims=True)

"""The search budget and hyper-parameters shared by the sampling planners (``PlannerConfig``), and the validation
helper other configs use (``require_positive_ints``)."""

from __future__ import annotations

from dataclasses import dataclass

from worldvid.costs import REDUCTIONS

WARM_TAILS = ("repeat", "zero")
"""How ``PlannerConfig.warm_tail`` fills the end of a shifted warm start."""


def require_positive_ints(owner: object, names: tuple[str, ...], optional: bool = False) -> None:
    """ValueError naming the first of ``owner``'s attributes ``names`` that is not a positive int.

    optional: None is accepted too (a setting left to its default).
    """
    _require_ints(owner, names, 1, "a positive integer", optional)


def require_non_negative_ints(owner: object, names: tuple[str, ...]) -> None:
    """ValueError naming the first of ``owner``'s attributes ``names`` that is not an int >= 0."""
    _require_ints(owner, names, 0, "a non-negative int", False)


def _require_ints(owner: object, names: tuple[str, ...], minimum: int, what: str, optional: bool) -> None:
    for name in names:
        value = getattr(owner, name)
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be {what}, got {value!r}")


@dataclass(frozen=True)
class PlannerConfig:
    """Search budget and hyper-parameters of the sampling planners (one config for all of them).

    Per decision a planner imagines ``candidates x (horizon x action_repeat + settle)`` frames ``iterations`` times
    (fewer with ``population_decay`` < 1: ``imagined_per_decision``; more where ``stall_rounds`` searches again).
    """

    candidates: int = 32
    """N: candidate action sequences per iteration (one batched imagination call)."""
    horizon: int = 6
    """H: planned actions per candidate."""
    action_repeat: int = 1
    """R: env steps each planned action is held for (DINO-WM's frame skip): a candidate covers H x R steps
    (all imagined and scored), so the same search budget looks R times further ahead."""
    iterations: int = 2
    """Sampling rounds per decision (the oracle solved as many episodes with 2 as with 3 on every task)."""
    elites: int = 4
    """CEM: candidates the next distribution is fitted to."""
    smoothing: float = 0.1
    """CEM / MPPI: new = smoothing * old + (1 - smoothing) * fitted, for mean and std."""
    init_std: float = 0.6
    """Std of the first round's Gaussian, in action units (actions lie in [-1, 1])."""
    min_std: float = 0.05
    """Floor of the std, so the search never collapses completely."""
    temperature: float = 0.1
    """MPPI: softmax temperature on costs normalised to [0, 1] within an iteration."""
    noise_correlation: float = 0.5
    """AR(1) correlation of the sampling noise along the horizon (0: white); smoother candidates travel further."""
    reduce: str = "final"
    """How a video's per-frame costs are reduced: 'final', 'mean' or 'discounted' (``worldvid.costs``). 'final'
    leaves the way to the goal free (Push, oracle, keypoint cost: 10/10 episodes with 'final', 9/10 'mean')."""
    discount: float = 0.9
    """Discount for reduce='discounted'."""
    warm_start: bool = True
    """Start each decision from the previous plan shifted by the executed steps (and keep it as a candidate)."""
    warm_tail: str = "repeat"
    """How the shifted warm start is filled at its end: 'repeat' its last action, or 'zero' (no action: with
    force control the shifted plan then ends where the previous one did, instead of pushing on)."""
    population_decay: float = 1.0
    """iCEM (Pinneri et al. 2020): iteration i draws round(candidates x decay^i) new candidates (at least
    ``elites``); 1 keeps the population fixed. Fewer imagined frames per decision."""
    keep_elites: int = 0
    """iCEM: the best ``keep_elites`` candidates of an iteration join the next one with their costs, without
    being imagined again (0: none)."""
    settle: int = 0
    """Env steps of no action (zero, clipped to the action box) appended to every candidate before it is scored,
    imagined but never executed: the cost then reads where the scene comes to rest, not a pose it passes through
    at full speed (a final-frame cost otherwise rewards pushing the object through the goal)."""
    commit_margin: float = 0.0
    """Keep executing the warm start (the previous plan, shifted) unless a new candidate gains more than (1 +
    commit_margin) x what it gains, a gain being the cost of doing nothing (a candidate of no action, scored in the
    first round) minus the plan's cost: near the goal many plans score alike, and switching among them at every
    decision executes the first steps of each and the end of none. 0: the best candidate always wins (CEM,
    shooting)."""
    stall_rounds: int = 0
    """Searches again (``iterations`` more rounds from the initial spread around the best plan so far), up to this
    many times per decision, while the best plan gains less than ``stall_gain`` x the cost of doing nothing (a
    candidate of no action): the decisions where no push was found get more search, the others none."""
    stall_gain: float = 0.1
    """See ``stall_rounds``: the gain on doing nothing, as a share of its cost, below which a search has stalled."""
    shrink_horizon: bool = False
    """Plans see the episode's time limit (shrinking-horizon MPC): the planned actions that would run past the
    steps left in the episode are imagined as no action, so a candidate is scored by where the scene is when the
    episode ends and a plan that reaches the goal in time beats one that gets there after the limit."""

    def population(self, iteration: int) -> int:
        """New candidates drawn (and imagined) in ``iteration`` (0-based)."""
        return max(self.elites, round(self.candidates * self.population_decay**iteration))

    @property
    def imagined_per_decision(self) -> int:
        """Frames one decision imagines: sum over iterations of population x (horizon x action_repeat + settle), before
        any ``stall_rounds`` restart."""
        steps = self.horizon * self.action_repeat + self.settle
        return sum(self.population(i) for i in range(self.iterations)) * steps

    def __post_init__(self) -> None:
        require_positive_ints(self, ("candidates", "horizon", "iterations", "elites", "action_repeat"))
        if self.elites > self.candidates:
            raise ValueError(f"elites ({self.elites}) cannot exceed candidates ({self.candidates})")
        for name in ("init_std", "min_std", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0.0 < self.population_decay <= 1.0:
            raise ValueError(f"population_decay must be in (0, 1], got {self.population_decay!r}")
        if isinstance(self.keep_elites, bool) or not isinstance(self.keep_elites, int) or \
                not 0 <= self.keep_elites <= self.candidates:
            raise ValueError(f"keep_elites must be an int in [0, candidates], got {self.keep_elites!r}")
        require_non_negative_ints(self, ("settle", "stall_rounds"))
        if not 0.0 <= self.stall_gain <= 1.0:
            raise ValueError(f"stall_gain must be in [0, 1], got {self.stall_gain!r}")
        if not self.commit_margin >= 0.0:
            raise ValueError(f"commit_margin must be >= 0, got {self.commit_margin!r}")
        if not 0.0 <= self.smoothing < 1.0 or not 0.0 <= self.noise_correlation < 1.0:
            raise ValueError("smoothing and noise_correlation must be in [0, 1)")
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {list(REDUCTIONS)}, got {self.reduce!r}")
        if self.warm_tail not in WARM_TAILS:
            raise ValueError(f"warm_tail must be one of {list(WARM_TAILS)}, got {self.warm_tail!r}")

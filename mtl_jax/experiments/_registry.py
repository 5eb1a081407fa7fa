"""Registry of the packaged experiments that ``mtl-jax run NAME`` can start.

An experiment is a function ``fn(*, fast: bool, out_dir: pathlib.Path, seed: int)``
returning an :class:`ExperimentResult`. Modules in :mod:`mtl_jax.experiments`
whose names do not start with an underscore are imported by the CLI, and each
registers its experiments with :func:`register`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pathlib
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Turns :func:`progress` bars, and the data cache's preparation bar, off or back on.

    ``mtl-jax run ... --quiet`` calls it; so does :func:`mtl_jax.data.load` honour it.
    """
    from mtl_jax.data import _tfds

    global _QUIET
    _QUIET = bool(quiet)
    _tfds.set_quiet(quiet)


def progress(iterable: Iterable[T], desc: str, *, total: int | None = None) -> Iterator[T]:
    """Wraps ``iterable`` in a tqdm progress bar on stderr for long experiment loops.

    The bar is shown only when stderr is a terminal and the CLI was not given
    ``--quiet``; otherwise the items pass through untouched, so logs and tests
    stay clean. Experiments use it for their outer training loops::

        for chunk in progress(range(num_chunks), "gradnorm seed 0"):
            ...

    Args:
      iterable: the items to iterate over.
      desc: the bar's label (e.g. the method and seed being trained).
      total: the number of items, if ``iterable`` has no ``len``.

    Returns:
      An iterator over the same items.
    """
    from tqdm.auto import tqdm

    disable = _QUIET or not sys.stderr.isatty()
    yield from tqdm(iterable, desc=desc, total=total, file=sys.stderr, disable=disable, leave=False)


def checkpointer(directory: str | pathlib.Path, *, save_every: int, keep: int = 2) -> Any:
    """The checkpointer experiments save to and resume from (``--resume``).

    Returns ``mtl_jax.training.Checkpointer(directory, save_every=, keep=)``, whose
    interface experiments rely on: ``restore_latest(template) -> (state, extra) |
    None``, ``save(step, state, *, extra=None, force=False)``, ``close()`` and use
    as a context manager. Returns ``None`` when this install has no
    ``Checkpointer`` (experiments then run without checkpoints). Tests replace
    this function to inject an in-memory stand-in.

    Args:
      directory: where this run's checkpoints live (made absolute, as orbax needs).
      save_every: save every this many steps (``save(..., force=True)`` always saves).
      keep: how many recent checkpoints to keep.
    """
    from mtl_jax import training

    cls = getattr(training, "Checkpointer", None)
    if cls is None:
        return None
    return cls(pathlib.Path(directory).resolve(), save_every=save_every, keep=keep)


__all__ = [
    "Experiment",
    "ExperimentResult",
    "available",
    "checkpointer",
    "get",
    "progress",
    "register",
    "seeds_from",
    "set_quiet",
    "write_results",
]


def seeds_from(seed: int, n: int) -> list[int]:
    """The ``n`` seeds an experiment uses when run with ``--seed seed``.

    Every experiment derives its seeds from the CLI's ``--seed`` through this one
    rule (``seed, seed + 1, ...``), so that ``mtl-jax run NAME --seed S`` checks
    a claim on seeds nobody tuned on.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [int(seed) + i for i in range(n)]


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """What an experiment reports: a printable table, its rows and written files."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    files: list[pathlib.Path] = dataclasses.field(default_factory=list)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The seeds the run used (see :func:`seeds_from`).
    seeds: list[int] = dataclasses.field(default_factory=list)
    #: Name of the headline metric whose per-seed values ``per_seed`` holds.
    metric: str = ""
    #: For each method or variant, the headline metric's value on each seed.
    per_seed: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    #: The paper's claim this run checks, and whether it held on this run (``None``: this
    #: run does not test it, e.g. a fast form too small for a verdict).
    claim: str = ""
    claim_held: bool | None = None
    #: How the verdict was reached (JSON-serialisable): the statistic, its level and
    #: values; or, when ``claim_held`` is ``None``, a ``"reason"`` the claim is not tested.
    claim_test: dict[str, Any] = dataclasses.field(default_factory=dict)

    def format_table(self) -> str:
        cells = [[_fmt(c) for c in row] for row in self.rows]
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(self.columns)]
        line = "  ".join(h.ljust(w) for h, w in zip(self.columns, widths))
        sep = "  ".join("-" * w for w in widths)
        body = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
        return "\n".join([self.title, line, sep, *body])


def write_results(
    result: ExperimentResult,
    out_dir: pathlib.Path,
    *,
    name: str,
    form: str,
    wall_time_s: float,
) -> pathlib.Path:
    """Write ``results.json`` next to the experiment's PNG in ``out_dir``.

    For each method or variant: the headline metric's mean, standard deviation
    (``ddof=1``; 0 for one seed) and per-seed values; plus the experiment's name,
    form (``"fast"``/``"full"``), seeds, claim, verdict (``"held"``, ``"not held"``,
    ``"inconclusive"`` or ``"not tested"``, see :func:`verdict`) with how it was
    reached (``claim_test``), and wall time.
    """
    import json

    import numpy as np

    methods = {}
    for method, values in result.per_seed.items():
        v = np.asarray(values, dtype=np.float64)
        methods[method] = {
            "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "per_seed": [float(x) for x in v],
        }
    payload = {
        "experiment": name,
        "form": form,
        "seeds": [int(s) for s in result.seeds],
        "metric": result.metric,
        "methods": methods,
        "claim": result.claim,
        "claim_held": result.claim_held,
        "verdict": verdict(result),
        "claim_test": result.claim_test,
        "wall_time_s": float(wall_time_s),
        "files": [f.name for f in result.files],
    }
    path = pathlib.Path(out_dir) / "results.json"
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def verdict(result: ExperimentResult) -> str:
    """``"held"``, ``"not held"``, ``"inconclusive"`` or ``"not tested"`` for ``result``.

    ``claim_held`` decides the first two; with ``claim_held=None`` the verdict is
    ``"inconclusive"`` when ``claim_test["verdict"]`` says so (the claim was tested
    and the statistic could not decide), else ``"not tested"``.
    """
    if result.claim_held is None and result.claim_test.get("verdict") == "inconclusive":
        return "inconclusive"
    return {True: "held", False: "not held", None: "not tested"}[result.claim_held]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


#: The keyword parameters every experiment function takes (``--full``, ``--seed``, ``--out``).
REQUIRED_PARAMETERS = ("fast", "out_dir", "seed")
#: The keyword parameters an experiment may take, each one a CLI option (``--resume``,
#: ``--balancer``, ``--data-dir``); an experiment takes the option iff its function does.
OPTIONAL_PARAMETERS = ("resume", "balancer", "data_dir")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: its name, one-line help, function and what it checks.

    Everything the CLI says about an experiment and every option it accepts comes
    from this one declaration: the options from the function's keyword
    parameters (see :attr:`options`), the claim and the seeds from the
    :func:`register` call, the summary from the docstring.
    """

    name: str
    help: str
    fn: Callable[..., ExperimentResult]
    #: The paper's claim the experiment checks (shown by ``mtl-jax run NAME --help``).
    claim: str
    #: How many seeds ``seeds_from(--seed, n)`` gives in the (fast, full) forms.
    num_seeds: tuple[int, int]
    #: Whether it reads packaged data through the offline cache (then it takes ``--data-dir``).
    reads_data: bool = True

    @property
    def summary(self) -> str:
        """The first paragraph of the function's (or else its module's) docstring, on one line."""
        doc = self.fn.__doc__ or getattr(sys.modules.get(self.fn.__module__), "__doc__", "")
        paragraph = (doc or "").strip().split("\n\n")[0]
        return " ".join(paragraph.split()) or self.help

    @property
    def parameters(self) -> tuple[str, ...]:
        """The optional keyword parameters (:data:`OPTIONAL_PARAMETERS`) the function takes."""
        import inspect

        taken = inspect.signature(self.fn).parameters
        return tuple(p for p in OPTIONAL_PARAMETERS if p in taken)

    @property
    def options(self) -> tuple[str, ...]:
        """The ``mtl-jax run NAME`` options this experiment takes, as parameter names.

        ``full``, ``seed``, ``out`` and ``quiet`` always; ``resume`` and ``balancer``
        when the function takes them; ``data_dir`` when it takes it or reads data
        through the offline cache.
        """
        opts = ["full", "seed", "out", "quiet"]
        opts += [p for p in self.parameters if p != "data_dir"]
        if self.reads_data or "data_dir" in self.parameters:
            opts.append("data_dir")
        return tuple(opts)

    @property
    def supports_resume(self) -> bool:
        """Whether the function takes a ``resume`` keyword (``mtl-jax run --resume``)."""
        return "resume" in self.parameters


_REGISTRY: dict[str, Experiment] = {}


def _check_declaration(name: str, fn: Callable, claim, num_seeds) -> None:
    import inspect

    if not isinstance(claim, str) or not claim.strip():
        raise ValueError(f"experiment {name!r}: claim must be a non-empty sentence; got {claim!r}")
    if (
        not isinstance(num_seeds, tuple)
        or len(num_seeds) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in num_seeds)
    ):
        raise ValueError(
            f"experiment {name!r}: num_seeds must be (fast, full), two ints >= 1; got {num_seeds!r}"
        )
    params = inspect.signature(fn).parameters
    missing = [p for p in REQUIRED_PARAMETERS if p not in params]
    unknown = [p for p in params if p not in REQUIRED_PARAMETERS + OPTIONAL_PARAMETERS]
    if missing or unknown:
        raise ValueError(
            f"experiment {name!r}: the function must take {REQUIRED_PARAMETERS} and may take "
            f"{OPTIONAL_PARAMETERS}; missing {missing}, unknown {unknown}"
        )


def register(
    name: str,
    help: str,
    *,
    claim: str,
    num_seeds: tuple[int, int],
    reads_data: bool = True,
) -> Callable:
    """Decorator registering ``fn`` as experiment ``name``: its one declaration.

    The function takes ``fast``, ``out_dir`` and ``seed`` and, as it needs them,
    ``resume``, ``balancer`` and ``data_dir``; ``mtl-jax run NAME`` then offers
    exactly those options, and ``--help`` shows the claim and the seeds.

    Args:
      name: the name ``mtl-jax run NAME`` takes.
      help: one line for ``mtl-jax list``.
      claim: the paper's claim the experiment checks (for ``run NAME --help``).
      num_seeds: ``(fast, full)`` numbers of seeds drawn with :func:`seeds_from`.
      reads_data: whether it reads packaged data through the offline cache, so
        that ``--data-dir`` applies.

    Raises:
      ValueError: an empty claim, a malformed ``num_seeds``, or a function whose
        keyword parameters are not the ones above.
    """

    def deco(fn: Callable[..., ExperimentResult]) -> Callable[..., ExperimentResult]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"experiment {name!r} is registered twice")
        _check_declaration(name, fn, claim, num_seeds)
        _REGISTRY[name] = Experiment(name, help, fn, claim, num_seeds, bool(reads_data))
        return fn

    return deco


def _load_all() -> None:
    import mtl_jax.experiments as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")


def available() -> dict[str, Experiment]:
    """All registered experiments, by name."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Experiment:
    exps = available()
    if name not in exps:
        raise KeyError(f"unknown experiment {name!r}; available: {', '.join(exps)}")
    return exps[name]

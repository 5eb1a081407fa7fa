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


def progress(
    iterable: Iterable[T], desc: str, *, total: int | None = None, quiet: bool = False
) -> Iterator[T]:
    """Wraps ``iterable`` in a tqdm progress bar on stderr for long experiment loops.

    The bar is shown only when stderr is a terminal and ``quiet`` is false (the
    CLI's ``--quiet``, which the experiment passes on); otherwise the items pass
    through untouched, so logs and tests stay clean. Experiments use it for their
    outer training loops::

        for chunk in progress(range(num_chunks), "gradnorm seed 0", quiet=quiet):
            ...

    Args:
      iterable: the items to iterate over.
      desc: the bar's label (e.g. the method and seed being trained).
      total: the number of items, if ``iterable`` has no ``len``.
      quiet: never show the bar.

    Returns:
      An iterator over the same items.
    """
    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()
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
    #: The paper's claim this run checks, and whether it held on this run: ``True`` when
    #: every part of :attr:`claims` held, ``False`` when one did not, ``None`` when the
    #: run does not decide it (see :func:`mtl_jax.experiments._verdict.claim_held`).
    claim: str = ""
    claim_held: bool | None = None
    #: How the verdict was reached (JSON-serialisable), for experiments whose parts do
    #: not fit :attr:`claims`; or, when ``claim_held`` is ``None``, a ``"reason"``.
    claim_test: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: One record per claim part, as :meth:`mtl_jax.experiments._verdict.ClaimPart.test`
    #: returns it: name, statistic, value, p-value, interval, effect size, verdict.
    claims: list[dict[str, Any]] = dataclasses.field(default_factory=list)

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
    command: list[str] | None = None,
    wall_time_parts_s: list[float] | None = None,
) -> pathlib.Path:
    """Write ``results.json`` into ``out_dir``: every number the run's verdict used.

    The one writer of every experiment's results. For each method or variant: the
    headline metric's mean, sample standard deviation (``ddof=1``; ``None`` for one
    seed) and per-seed values. Then the claim, its parts as tested (``claims``: each
    part's statistic, value, one-sided p-value or interval, effect size and verdict;
    ``declared_parts``: the parts as registered, with the effect each form detects),
    the summary verdict (``claim_held`` true / false / null and ``verdict``), the
    experiment's own ``summary`` (paired gains, tests, per-condition numbers), the
    command line, the package version, the git commit of the source tree (``None``
    outside a git checkout), and the wall time summed over every part of a resumed run.

    Args:
      result: what the experiment returned.
      out_dir: the run's folder.
      name: the experiment's name.
      form: ``"fast"`` or ``"full"``.
      wall_time_s: total wall time in seconds (all parts of a resumed run).
      command: the command line (default ``sys.argv``).
      wall_time_parts_s: the wall time of each part of a resumed run, if resumed.

    Returns:
      The path written.
    """
    import json

    import numpy as np

    from mtl_jax.experiments import _verdict

    methods = {}
    for method, values in result.per_seed.items():
        v = np.asarray(values, dtype=np.float64)
        methods[method] = {
            "mean": _finite(v.mean()),
            "std": _finite(v.std(ddof=1)) if v.size > 1 else None,
            "per_seed": [_finite(x) for x in v],
        }
    claims = _jsonable(list(result.claims))
    if claims and result.claim_held is not _verdict.claim_held(claims):
        raise ValueError(
            f"{name}: claim_held={result.claim_held!r} disagrees with its parts' verdicts "
            f"{[c['verdict'] for c in claims]} (summarise them with _verdict.claim_held)"
        )
    payload = {
        "experiment": name,
        "form": form,
        "seeds": [int(s) for s in result.seeds],
        "metric": result.metric,
        "std": "sample standard deviation over seeds (ddof=1)",
        "methods": methods,
        "claim": result.claim,
        "declared_parts": _declared(name),
        "claims": claims,
        "claim_held": result.claim_held,
        "verdict": _verdict.verdict_label(result.claim_held, claims) if claims else verdict(result),
        "claim_test": _jsonable(result.claim_test),
        "summary": _jsonable(result.summary),
        "command": " ".join(["mtl-jax", *command] if command is not None else sys.argv),
        "version": _version(),
        "git_commit": _git_commit(),
        "wall_time_s": float(wall_time_s),
        "wall_time_parts_s": [float(t) for t in (wall_time_parts_s or [wall_time_s])],
        "files": [f.name for f in result.files],
    }
    path = pathlib.Path(out_dir) / "results.json"
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def verdict(result: ExperimentResult) -> str:
    """The verdict of a result whose claim has no declared parts.

    ``claim_held`` decides ``"held"`` / ``"not held"``; with ``claim_held=None`` it is
    ``"inconclusive"`` when ``claim_test["verdict"]`` says the claim was tested and the
    statistic could not decide, else ``"not tested"``.
    """
    if result.claim_held is None and (result.claim_test or {}).get("verdict") == "inconclusive":
        return "inconclusive"
    return {True: "held", False: "not held", None: "not tested"}[result.claim_held]


def _declared(name: str) -> list[dict[str, Any]]:
    """The registered experiment's declared parts, with detectable effects per form."""
    exp = _REGISTRY.get(name)
    if exp is None:
        return []
    return [_jsonable(p.declaration(exp.num_seeds)) for p in exp.parts]


def _finite(x) -> float | None:
    """``float(x)``, or ``None`` for NaN/inf (JSON has no NaN)."""
    import math

    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(obj: Any) -> Any:
    """``obj`` with tuples, NumPy scalars/arrays and non-finite floats made JSON-safe."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _finite(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, pathlib.Path):
        return obj.name
    return str(obj)


def _version() -> str:
    import mtl_jax

    return str(getattr(mtl_jax, "__version__", "unknown"))


def _git_commit() -> str | None:
    """The git commit of the source tree ``mtl_jax`` is imported from, or ``None``."""
    import subprocess

    import mtl_jax

    root = pathlib.Path(mtl_jax.__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


#: The keyword parameters every experiment function takes (``--full``, ``--seed``, ``--out``).
REQUIRED_PARAMETERS = ("fast", "out_dir", "seed")
#: The keyword parameters an experiment may take, each one a CLI option (``--resume``,
#: ``--balancer``, ``--data-dir``, ``--quiet``) that the CLI passes down as an argument.
OPTIONAL_PARAMETERS = ("resume", "balancer", "data_dir", "quiet")
#: The keyword parameters an experiment declared with ``reads_data=True`` must take: where
#: its data cache is (``--data-dir``) and whether preparing it shows a bar (``--quiet``).
DATA_PARAMETERS = ("data_dir", "quiet")


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
    #: Whether it reads packaged data through the offline cache (then its function takes
    #: ``data_dir`` and ``quiet``, and the CLI offers ``--data-dir``).
    reads_data: bool = True
    #: The claim's parts as declared comparisons (statistic, level, detectable effect).
    parts: tuple = ()

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

        ``full``, ``seed``, ``out`` and ``quiet`` always (``quiet`` has nothing to
        hide in an experiment that does not take it); ``resume``, ``balancer`` and
        ``data_dir`` when the function takes them, which for ``data_dir`` is exactly
        when the experiment is declared ``reads_data`` (see :func:`register`).
        """
        opts = ["full", "seed", "out", "quiet"]
        opts += [p for p in self.parameters if p != "quiet"]
        return tuple(opts)

    @property
    def supports_resume(self) -> bool:
        """Whether the function takes a ``resume`` keyword (``mtl-jax run --resume``)."""
        return "resume" in self.parameters


_REGISTRY: dict[str, Experiment] = {}


def _check_declaration(
    name: str, fn: Callable, claim, num_seeds, reads_data: bool, parts=()
) -> None:
    import inspect

    from mtl_jax.experiments._verdict import ClaimPart

    if not isinstance(parts, tuple) or not all(isinstance(p, ClaimPart) for p in parts):
        raise ValueError(f"experiment {name!r}: parts must be a tuple of ClaimPart; got {parts!r}")

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
    data_params = [p for p in DATA_PARAMETERS if p in params]
    if reads_data and len(data_params) != len(DATA_PARAMETERS):
        raise ValueError(
            f"experiment {name!r} reads data (reads_data=True), so its function must take "
            f"{DATA_PARAMETERS} and pass them to its data loading; it takes {data_params}"
        )
    if not reads_data and "data_dir" in params:
        raise ValueError(f"experiment {name!r} takes data_dir but is declared reads_data=False")


def register(
    name: str,
    help: str,
    *,
    claim: str,
    num_seeds: tuple[int, int],
    reads_data: bool = True,
    parts: tuple = (),
) -> Callable:
    """Decorator registering ``fn`` as experiment ``name``: its one declaration.

    The function takes ``fast``, ``out_dir`` and ``seed``; ``data_dir`` and
    ``quiet`` when it reads data through the offline cache (``reads_data``, the
    default); and, as it needs them, ``resume``, ``balancer`` and ``quiet``.
    ``mtl-jax run NAME`` then offers exactly those options and passes each one
    down as that argument (no module state is set), and ``--help`` shows the
    claim and the seeds.

    Args:
      name: the name ``mtl-jax run NAME`` takes.
      help: one line for ``mtl-jax list``.
      claim: the paper's claim the experiment checks (for ``run NAME --help``).
      num_seeds: ``(fast, full)`` numbers of seeds drawn with :func:`seeds_from`.
      reads_data: whether it reads packaged data through the offline cache
        (then the function must take ``data_dir`` and ``quiet``).
      parts: the claim's parts, each a :class:`~mtl_jax.experiments._verdict.ClaimPart`
        declared before the run (comparison, statistic, level, expected sd), so that
        ``run NAME --help`` shows the effect each form can detect.

    Raises:
      ValueError: an empty claim, a malformed ``num_seeds``, or a function whose
        keyword parameters are not the ones above (or lack ``data_dir``/``quiet``
        under ``reads_data``).
    """

    def deco(fn: Callable[..., ExperimentResult]) -> Callable[..., ExperimentResult]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"experiment {name!r} is registered twice")
        _check_declaration(name, fn, claim, num_seeds, bool(reads_data), parts)
        _REGISTRY[name] = Experiment(name, help, fn, claim, num_seeds, bool(reads_data), parts)
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

"""Reward plugin registry.

A reward plugin is anything that yields a TRL reward function
``fn(prompts, completions, **columns) -> list[float | None]``. There are three ways in:

* built-ins and user code registered with the :func:`register_reward` decorator;
* a dotted path ``"package.module:object"``;
* a Python entry point in the group ``trl_lab.rewards`` of any installed distribution
  (``[project.entry-points."trl_lab.rewards"] my_reward = "my_pkg.rewards:my_reward"``).

The registered object is either a *reward function* (it has a ``completions`` parameter; options given
to :func:`get_reward` are bound as keyword arguments) or a *factory* (a class, or a function without a
``completions`` parameter, called with the options and returning a reward function). Pass
``factory=True``/``False`` to :func:`register_reward` to override that rule.

:func:`get_reward` returns a :class:`Reward`: a checked wrapper that carries the plugin's name as
``__name__`` (TRL logs ``rewards/<name>/mean``), re-raises a plugin's exception naming the plugin and
the first failing sample, and rejects outputs of the wrong length, with NaN/inf, or beyond float32 (TRL's reward
dtype) once weighted. ``None`` keeps TRL's meaning: the reward does not apply to that sample.

Each call gets its own copy of the inputs (the ``prompts``/``completions`` lists, ``completion_ids`` and the dataset
columns, down to their dicts and lists; strings and numbers are immutable), so a plugin that mutates them cannot
change what later plugins, the gold checker or the held-out proxy see. ``trainer_state``, ``log_extra``,
``log_metric`` and ``environments`` are shared on purpose and passed as they are.

Each call has a **timeout** (``Reward.timeout`` seconds; from the spec's ``timeout`` key, else the global default
:func:`default_timeout`: ``$TRL_LAB_REWARD_TIMEOUT``, else 600 s; ``0`` or ``none`` turns it off). A synchronous plugin
runs in a worker thread that the caller waits on; when it does not return in time, :class:`RewardTimeoutError`
names the plugin. Python cannot kill a thread: the stuck call keeps running in the background (holding whatever it
holds) until the process exits, so the error stops the run rather than retrying. The worker thread gets the
caller's torch grad/inference mode and CUDA device; a plugin that must run on the main thread (``signal.alarm``)
takes ``timeout: 0`` and is then called directly. An ``async`` plugin is awaited
with that timeout and cancelled when it passes; a coroutine that blocks its event loop without ever awaiting
(``time.sleep`` in an ``async def``) cannot be interrupted by asyncio and is not caught.

A dotted path (``"pkg.module:object"``) must name a reward plugin, not just any callable (``"os:system"`` would
run a shell command with the spec's options): an object registered with :func:`register_reward` (importing its
module registers it), a Python function with a ``completions`` parameter, or a class whose ``__call__`` takes
``completions``. A factory *function* must be registered. A config file is still trusted code: importing the named
module runs it.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import inspect
import math
import numbers
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trl_lab.rewards.weighted_sum import FLOAT32_MAX, WeightedSumCheck

RewardFunc = Callable[..., Sequence[float | None]]

ENTRY_POINT_GROUP = "trl_lab.rewards"

# Keyword arguments TRL's GRPOTrainer passes to every reward function besides the dataset columns.
_TRL_SUPPLIED = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)


# Passed to every plugin as they are (shared state by design); every other argument is copied per call.
_SHARED_BY_DESIGN = frozenset({"trainer_state", "log_extra", "log_metric", "environments"})

#: Seconds a plugin call may take unless its spec says otherwise (``$TRL_LAB_REWARD_TIMEOUT`` overrides).
DEFAULT_TIMEOUT_S = 600.0
TIMEOUT_ENV = "TRL_LAB_REWARD_TIMEOUT"


class RewardPluginError(RuntimeError):
    """A reward plugin could not be found, built, or returned an invalid result."""


class RewardTimeoutError(RewardPluginError):
    """A reward plugin call did not return within its timeout."""


def parse_timeout(value: Any, what: str) -> float | None:
    """A timeout in seconds: a positive finite number, or ``0`` / ``None`` / ``"none"`` / ``"off"`` for none."""
    if value is None or isinstance(value, str) and value.strip().lower() in ("", "none", "off", "0"):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds (0 or none for no timeout), got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0 (0 for no timeout), got {value!r}")
    return seconds or None


def default_timeout() -> float | None:
    """The global default timeout of a plugin call: ``$TRL_LAB_REWARD_TIMEOUT`` seconds, else 600; None for none."""
    raw = os.environ.get(TIMEOUT_ENV)
    return DEFAULT_TIMEOUT_S if raw is None else parse_timeout(raw, f"${TIMEOUT_ENV}")


@dataclass(frozen=True)
class _Registration:
    name: str
    target: Any
    factory: bool
    origin: str  # "trl_lab", a module name, or "entry point from <dist>"


_REGISTRY: dict[str, _Registration] = {}
_ENTRY_POINTS_LOADED = False


def register_reward(name: str, *, factory: bool | None = None) -> Callable[[Any], Any]:
    """Register a reward function or factory under ``name``; returns the object unchanged.

    Example::

        @register_reward("shouting")
        def shouting(completions, **kwargs):
            return [float(completion_text(c).isupper()) for c in completions]
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")

    def decorator(obj: Any) -> Any:
        if not callable(obj):
            raise TypeError(f"@register_reward({name!r}) must decorate a function or class, got {obj!r}")
        origin = getattr(obj, "__module__", None) or "<unknown>"
        _add(_Registration(name, obj, _is_factory(obj) if factory is None else factory, origin))
        return obj

    return decorator


def _add(reg: _Registration) -> None:
    existing = _REGISTRY.get(reg.name)
    if existing is not None and existing.target is not reg.target:
        if _qualname(existing.target) == _qualname(reg.target):
            pass  # the same definition imported again (module reload, __main__ vs package): replace it
        else:
            raise RewardPluginError(
                f"reward name {reg.name!r} is already registered by {existing.origin} "
                f"({_qualname(existing.target)}); cannot register {_qualname(reg.target)} from {reg.origin} "
                "under the same name"
            )
    _REGISTRY[reg.name] = reg


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _is_factory(obj: Any) -> bool:
    """Classes are factories; a function is a reward function when it takes ``completions``."""
    if inspect.isclass(obj):
        return True
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return "completions" not in params


#: The modules of the built-in plugins; each registers its rewards when imported (on first use of the registry).
BUILTIN_MODULES = ("trl_lab.rewards.coin_flip", "trl_lab.rewards.gsm8k", "trl_lab.rewards.learned_rm",
                   "trl_lab.rewards.length", "trl_lab.rewards.sentiment")


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        if ep.name in _REGISTRY:
            existing = _REGISTRY[ep.name]
            warnings.warn(
                f"entry point {ep.name!r} from distribution {dist!r} ({ep.value}) is shadowed by the reward "
                f"already registered under that name by {existing.origin}",
                stacklevel=2,
            )
            continue
        # Loaded lazily, on first use: a broken third-party plugin must not break unrelated runs.
        _REGISTRY[ep.name] = _Registration(ep.name, ep, factory=False, origin=f"entry point from {dist!r}")


def list_rewards() -> list[str]:
    """Names of all available rewards: built-ins, registered ones and installed entry points."""
    _load_builtins()
    _load_entry_points()
    return sorted(_REGISTRY)


def describe_rewards() -> list[tuple[str, str]]:
    """``(name, where it comes from)`` for every available reward, sorted by name."""
    names = list_rewards()
    return [(n, _REGISTRY[n].origin) for n in names]


def get_reward(name: str, **kwargs: Any) -> "Reward":
    """Build the reward called ``name`` (a registered name or ``"pkg.module:object"``) with options ``kwargs``."""
    target, is_factory, display = _resolve(name)
    try:
        if is_factory:
            fn = target(**kwargs)
        else:
            _check_kwargs(target, kwargs, display)
            fn = functools.partial(target, **kwargs) if kwargs else target
    except RewardPluginError:
        raise
    except TypeError as exc:
        raise RewardPluginError(f"reward plugin {display!r}: bad options {sorted(kwargs)}: {exc}") from exc
    except Exception as exc:
        raise RewardPluginError(f"reward plugin {display!r} failed to build with options {kwargs}: {exc}") from exc
    if not callable(fn):
        raise RewardPluginError(f"reward plugin {display!r}: factory returned {type(fn).__name__}, not a callable")
    return wrap_reward(display, fn)


def as_reward(obj: str | RewardFunc) -> "Reward":
    """A plugin name, a :class:`Reward`, or any reward callable, as a checked :class:`Reward`.

    A plain callable is named by TRL's own ``get_callable_name`` (``functools.partial`` unwrapped, else
    ``__name__``, else its class name), so its metrics keep TRL's key.
    """
    if isinstance(obj, str):
        return get_reward(obj)
    if not callable(obj):
        raise TypeError(f"a reward must be a plugin name or a callable, got {type(obj).__name__}")
    from trl.trainer.utils import get_callable_name  # lazy, as every TRL import here: `import trl_lab` stays light

    return wrap_reward(get_callable_name(obj), obj)


def wrap_reward(name: str, fn: RewardFunc) -> "Reward":
    """Wrap a reward callable in the checked :class:`Reward` (``AsyncReward`` for ``async`` plugins)."""
    if isinstance(fn, Reward):
        return fn
    from trl.trainer.utils import is_async_callable

    return AsyncReward(name, fn) if is_async_callable(fn) else Reward(name, fn)


def plugin_object(name: str) -> Any:
    """What reward ``name`` (registered name or ``module:object``) refers to -- the function, class or factory --
    without building it; raises :class:`RewardPluginError` as :func:`get_reward` would."""
    return _resolve(name)[0]


def _resolve(name: str) -> tuple[Any, bool, str]:
    if not isinstance(name, str) or not name:
        raise RewardPluginError(f"reward name must be a non-empty string, got {name!r}")
    if ":" in name:
        return (*_import_dotted(name), name.rsplit(":", 1)[1].split(".")[-1])
    _load_builtins()
    if name not in _REGISTRY:
        _load_entry_points()
    reg = _REGISTRY.get(name)
    if reg is None:
        available = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, available, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RewardPluginError(
            f"unknown reward {name!r}.{hint} Available: {', '.join(available) or '(none)'}. "
            "A plugin can also be given as 'package.module:object' or installed as an entry point in the "
            f"{ENTRY_POINT_GROUP!r} group."
        )
    if isinstance(reg.target, importlib.metadata.EntryPoint):
        try:
            obj = reg.target.load()
        except Exception as exc:
            raise RewardPluginError(
                f"reward plugin {name!r} ({reg.origin}, {reg.target.value}) failed to import: {exc}"
            ) from exc
        reg = _Registration(name, obj, _is_factory(obj), reg.origin)
        _REGISTRY[name] = reg
    return reg.target, reg.factory, name


def _import_dotted(path: str) -> tuple[Any, bool]:
    module_name, _, attr_path = path.partition(":")
    if not module_name or not attr_path:
        raise RewardPluginError(f"dotted reward path must look like 'package.module:object', got {path!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardPluginError(f"reward plugin {path!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise RewardPluginError(f"reward plugin {path!r}: {module_name!r} has no attribute {attr_path!r}") from exc
    # A registered object (importing its module registered it) keeps its factory flag.
    for reg in _REGISTRY.values():
        if reg.target is obj:
            return obj, reg.factory
    if not _has_plugin_signature(obj):
        raise RewardPluginError(
            f"reward plugin {path!r}: {_qualname(obj)} is not a reward plugin, so it is not called (a dotted path "
            "could otherwise run any function with the spec's options, e.g. 'os:system'). A dotted path must name a "
            "function with a `completions` parameter, a class whose __call__ takes `completions`, or an object "
            "registered with @trl_lab.register_reward (factory functions must be registered)"
        )
    return obj, _is_factory(obj)


def _has_plugin_signature(obj: Any) -> bool:
    """A Python function taking ``completions``, or a class whose own ``__call__`` takes it (builtins never)."""
    if inspect.isclass(obj):
        if not any("__call__" in vars(k) for k in obj.__mro__ if k is not object):
            return False
        obj = obj.__call__
    while isinstance(obj, functools.partial):
        obj = obj.func
    if not (inspect.isfunction(obj) or inspect.ismethod(obj) and inspect.isfunction(obj.__func__)):
        return False
    return "completions" in inspect.signature(obj).parameters


def _check_kwargs(fn: Any, kwargs: dict[str, Any], display: str) -> None:
    if not kwargs:
        return
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    named = {p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)}
    unknown = sorted(set(kwargs) - named)
    if unknown:
        raise RewardPluginError(
            f"reward plugin {display!r} has no option(s) {unknown}; its options are "
            f"{sorted(named - {'prompts', 'completions', 'completion_ids'})}"
        )


class Reward:
    """A TRL reward function wrapped with checks; ``__name__`` is the plugin name TRL logs under.

    ``weight``: the weight TRL sums this reward with (``build_rewards`` sets it from the spec). ``timeout``: seconds
    a call may take (None: no limit). ``weighted_sum``: the check of the run's summed rewards this one belongs to.
    """

    def __init__(self, name: str, fn: RewardFunc, *, timeout: float | None | str = "default"):
        self.name = name
        self.__name__ = name
        self.fn = fn
        self.weight = 1.0
        self.timeout = default_timeout() if timeout == "default" else parse_timeout(timeout, f"timeout of {name!r}")
        self.weighted_sum: WeightedSumCheck | None = None

    def __repr__(self) -> str:
        return f"Reward({self.name!r}, {self.fn!r})"

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any):
        call = _private_inputs(prompts, completions, kwargs)
        try:
            out = self._call_in_time(call, len(completions))
        except RewardTimeoutError:
            raise
        except Exception as exc:
            raise self._failure(exc, self._first_failing_sample(prompts, completions, kwargs)) from exc
        return self._checked(out, completions)

    def _call_in_time(self, call: dict[str, Any], n: int) -> Any:
        """``fn(**call)``; with a timeout, in a worker thread the caller waits on (see the module doc)."""
        if self.timeout is None:
            return self.fn(**call)
        result: dict[str, Any] = {}
        done = threading.Event()
        torch_state = _caller_torch_state()

        def run() -> None:
            try:
                with torch_state():
                    result["out"] = self.fn(**call)
            except BaseException as exc:  # handed to the caller, raised there
                result["exc"] = exc
            finally:
                done.set()

        threading.Thread(target=run, name=f"reward plugin {self.name}", daemon=True).start()
        if not done.wait(self.timeout):
            raise self._timed_out(n)
        if "exc" in result:
            raise result["exc"]
        return result["out"]

    def _timed_out(self, n: int) -> RewardTimeoutError:
        return RewardTimeoutError(
            f"reward plugin {self.name!r} did not return within its timeout of {self.timeout:g} s (a batch of {n} "
            f"completions). Raise it with `timeout: <seconds>` in the plugin's reward spec, or for every plugin with "
            f"${TIMEOUT_ENV} (0 turns it off). The stuck call cannot be killed from Python and keeps running in "
            "the background until the process exits"
        )

    def _checked(self, out: Any, completions: Sequence[Any]) -> list[float | None]:
        values = self.validate(out, len(completions))
        if self.weighted_sum is not None:
            try:
                self.weighted_sum.record(self.name, completions, values)
            except OverflowError as exc:
                raise RewardPluginError(str(exc)) from None
        return values

    def _failure(self, exc: Exception, index: int | None) -> RewardPluginError:
        where = f" on sample {index}" if index is not None else ""
        return RewardPluginError(f"reward plugin {self.name!r} raised {type(exc).__name__}{where}: {exc}")

    def required_columns(self) -> list[str]:
        """Dataset columns the plugin needs: its parameters without a default that TRL does not supply."""
        fn, bound = self.fn, set()
        while isinstance(fn, functools.partial):
            bound |= set(fn.keywords)
            fn = fn.func
        if not inspect.isfunction(fn) and not inspect.ismethod(fn) and callable(fn):
            fn = type(fn).__call__
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return []
        return [
            p.name
            for p in params
            if p.default is p.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in _TRL_SUPPLIED | bound | {"self"}
        ]

    def validate(self, out: Any, expected: int) -> list[float | None]:
        """Check a plugin's output: one finite number (or None) per completion, finite in float32 once weighted."""
        if isinstance(out, (str, bytes)) or not isinstance(out, Sequence) and not hasattr(out, "tolist"):
            raise RewardPluginError(
                f"reward plugin {self.name!r} returned {type(out).__name__}; expected a list of floats"
            )
        values = out.tolist() if hasattr(out, "tolist") else list(out)
        if len(values) != expected:
            raise RewardPluginError(
                f"reward plugin {self.name!r} returned {len(values)} rewards for {expected} completions"
            )
        for i, v in enumerate(values):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise RewardPluginError(
                    f"reward plugin {self.name!r} returned {v!r} ({type(v).__name__}) for sample {i}; "
                    "expected a float or None"
                )
            if not math.isfinite(v):
                raise RewardPluginError(
                    f"reward plugin {self.name!r} returned {v} for sample {i}; rewards must be finite "
                    "(return None for 'not applicable')"
                )
            # TRL holds rewards as float32: beyond its range a finite reward becomes inf there.
            if abs(float(v)) > FLOAT32_MAX or abs(float(v) * self.weight) > FLOAT32_MAX:
                raise RewardPluginError(
                    f"reward plugin {self.name!r} returned {v} for sample {i}, which times its weight "
                    f"{self.weight:g} overflows float32 (TRL's reward dtype, max {FLOAT32_MAX:.4g}); the weighted "
                    "reward must be finite"
                )
            values[i] = float(v)
        return values

    def _first_failing_sample(self, prompts, completions, kwargs) -> int | None:
        """Re-run the plugin one sample at a time to name the sample that breaks it (error path only)."""
        for i, single in enumerate(_single_samples(prompts, completions, kwargs)):
            try:
                self._call_in_time(_private_inputs(**single), 1)
            except Exception:
                return i
        return None


class AsyncReward(Reward):
    """:class:`Reward` for ``async`` plugins; TRL awaits these concurrently with each other. The timeout cancels
    the plugin's coroutine."""

    async def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **kwargs: Any):
        try:
            out = await self._await_in_time(_private_inputs(prompts, completions, kwargs), len(completions))
        except RewardTimeoutError:
            raise
        except Exception as exc:
            index = None
            for i, single in enumerate(_single_samples(prompts, completions, kwargs)):
                try:
                    await self._await_in_time(_private_inputs(**single), 1)
                except Exception:
                    index = i
                    break
            raise self._failure(exc, index) from exc
        return self._checked(out, completions)

    async def _await_in_time(self, call: dict[str, Any], n: int) -> Any:
        if self.timeout is None:
            return await self.fn(**call)
        import asyncio

        task = asyncio.ensure_future(self.fn(**call))
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if not done:
            task.cancel()
            raise self._timed_out(n)
        return task.result()


def _private_inputs(prompts: Any = None, completions: Any = (), kwargs: dict[str, Any] | None = None,
                    **more: Any) -> dict[str, Any]:
    """A plugin call's keyword arguments, each its own copy (see the module doc)."""
    kwargs = {**(kwargs or {}), **more}
    return {"prompts": _copy_containers(prompts), "completions": _copy_containers(completions),
            **{k: v if k in _SHARED_BY_DESIGN else _copy_containers(v) for k, v in kwargs.items()}}


_IMMUTABLE_LEAVES = (str, int, float, bool, bytes, type(None))


def _copy_containers(value: Any) -> Any:
    """``value`` with every list, tuple and dict in it copied; strings, numbers and other objects shared."""
    if isinstance(value, list):
        if all(type(v) in _IMMUTABLE_LEAVES for v in value):
            return value.copy()  # the common flat case (texts, token ids, a column of answers) at C speed
        return [_copy_containers(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy_containers(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_copy_containers(v) for v in value)
    return value


def _caller_torch_state():
    """A context manager that gives a worker thread the caller's torch grad/inference mode and CUDA device (both
    are per thread)."""
    import contextlib

    torch = sys.modules.get("torch")
    if torch is None:
        return contextlib.nullcontext
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
    device = torch.cuda.current_device() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    @contextlib.contextmanager
    def state():
        if device is not None:
            torch.cuda.set_device(device)
        with torch.inference_mode() if inference else torch.set_grad_enabled(grad):
            yield

    return state


def _single_samples(prompts, completions, kwargs):
    """The call's keyword arguments cut down to one sample at a time (per-sample lists are sliced)."""
    n = len(completions)
    per_sample = {k for k, v in kwargs.items() if isinstance(v, (list, tuple)) and len(v) == n}
    for i in range(n):
        yield {
            "prompts": [prompts[i]] if prompts is not None and len(prompts) == n else prompts,
            "completions": [completions[i]],
            **{k: ([v[i]] if k in per_sample else v) for k, v in kwargs.items()},
        }

"""The routing table: action -> (processor, handler, params model, options).

Built once at start-up from every processor's :func:`corec_register_actions`; after that a
command's route is one dict lookup.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import ActionConflict, RegistrationError, UnknownAction

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .policies import ActionPolicy

ACTION_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,99}$")

Handler = Callable[..., Any]

#: ``register(..., blocking=...)``: False (an ``async def`` on the event loop), True (a plain
#: ``def`` in the kernel's thread pool) or ``"process"`` (a module-level ``def`` in the kernel's
#: process pool, whose worker is killed when the call times out or is cancelled).
Blocking = bool | Literal["process"]


@dataclass(slots=True)
class ActionSpec:
    """One routed action and everything dispatch needs to run it."""

    action: str
    processor: str
    handler: Handler
    params_model: type[BaseModel]
    description: str = ""
    timeout_s: float | None = None
    blocking: Blocking = False
    distribution: str | None = None
    #: The policy the processor registered (retry, rate limit, concurrency cap).
    registered_policy: ActionPolicy | None = None
    #: The policy in force: ``kernel.action_policies`` over the registered one; ``None``
    #: when there is none (the dispatch's fast path).
    policy: ActionPolicy | None = None
    # Set once when the spec is made: validating is the hot path, so skip attribute lookups.
    validate_python: Callable[[Any], Any] = field(init=False, repr=False)
    validate_json: Callable[[Any], Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        validator = self.params_model.__pydantic_validator__
        self.validate_python = validator.validate_python
        self.validate_json = validator.validate_json
        if self.policy is None and self.registered_policy is not None:
            self.policy = self.registered_policy if self.registered_policy.active else None

    @property
    def claimed_by(self) -> str:
        """``processor (distribution)`` as error messages name it."""
        if self.distribution:
            return f"{self.processor} ({self.distribution})"
        return self.processor

    def describe(self) -> dict[str, Any]:
        """The JSON shown by ``corec-kit describe`` and the ``describe_action`` action."""
        return {
            "action": self.action,
            "processor": self.processor,
            "distribution": self.distribution,
            "description": self.description,
            "blocking": self.blocking,
            "timeout_s": self.timeout_s,
            "policy": self.policy.model_dump() if self.policy is not None else None,
            "params_schema": self.params_model.model_json_schema(),
        }


class Register:
    """The ``register`` callback handed to :func:`corec_register_actions`.

    Collects one processor's claims; nothing reaches the routing table until the processor's
    whole registration succeeded.
    """

    def __init__(self, processor: str, distribution: str | None = None) -> None:
        self.processor = processor
        self.distribution = distribution
        self.specs: list[ActionSpec] = []

    def __call__(
        self,
        action: str,
        handler: Handler,
        params: type[BaseModel] | None = None,
        *,
        description: str | None = None,
        timeout_s: float | None = None,
        blocking: Blocking = False,
        retry: Any = None,
        rate_limit: float | None = None,
        rate_burst: int | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        from pydantic import BaseModel

        where = f"processor {self.processor!r}, action {action!r}"
        if not isinstance(action, str) or not ACTION_NAME.match(action):
            raise RegistrationError(
                f"{where}: action names are lower-case identifiers matching {ACTION_NAME.pattern}"
            )
        if any(spec.action == action for spec in self.specs):
            raise RegistrationError(f"{where}: registered twice by the same processor")
        _check_handler(where, handler, blocking)
        if params is None:
            params = _EmptyParams()
        if not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise RegistrationError(f"{where}: params must be a pydantic BaseModel subclass")
        if blocking == "process":
            _check_picklable(where, handler, params)
        if timeout_s is not None and timeout_s <= 0:
            raise RegistrationError(f"{where}: timeout_s must be positive")
        doc = description if description is not None else inspect.getdoc(handler) or ""
        policy = _policy(where, retry, rate_limit, rate_burst, max_concurrency)
        self.specs.append(
            ActionSpec(
                action=action,
                processor=self.processor,
                handler=handler,
                params_model=params,
                description=doc.strip().splitlines()[0] if doc.strip() else "",
                timeout_s=timeout_s,
                blocking=blocking,
                distribution=self.distribution,
                registered_policy=policy,
            )
        )


def _check_handler(where: str, handler: Handler, blocking: Blocking) -> None:
    """An ``async def`` handler on the loop; a plain ``def`` one in a thread or a process."""
    is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects count too
    )
    if blocking not in (True, False, "process"):
        raise RegistrationError(f"{where}: blocking must be False, True or 'process'")
    if blocking and is_async:
        where_to = "a thread" if blocking is True else "a worker process"
        raise RegistrationError(
            f"{where}: blocking={blocking!r} runs the handler in {where_to}; "
            "give a plain `def` handler"
        )
    if not blocking and not is_async:
        raise RegistrationError(
            f"{where}: handler {getattr(handler, '__qualname__', handler)!r} must be "
            "`async def`; declare blocking=True to run a plain function in the thread pool"
        )


def _policy(
    where: str,
    retry: Any,
    rate_limit: float | None,
    rate_burst: int | None,
    max_concurrency: int | None,
) -> ActionPolicy | None:
    """``register``'s policy keywords as an :class:`~.policies.ActionPolicy` (``None``: none)."""
    given = {
        key: value
        for key, value in (
            ("retry", retry),
            ("rate_limit", rate_limit),
            ("rate_burst", rate_burst),
            ("max_concurrency", max_concurrency),
        )
        if value is not None
    }
    if not given:
        return None
    from pydantic import ValidationError

    from .policies import ActionPolicy

    try:
        return ActionPolicy.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise RegistrationError(f"{where}: invalid policy: {problems}") from None


def _check_picklable(where: str, handler: Handler, params: type[BaseModel]) -> None:
    """A process handler and its params model cross to a worker process by reference."""
    import pickle

    for what, obj in (("handler", handler), ("params model", params)):
        try:
            pickle.dumps(obj)
        except Exception as exc:  # noqa: BLE001 - pickling raises several types
            raise RegistrationError(
                f"{where}: blocking='process' sends the {what} "
                f"{getattr(obj, '__qualname__', obj)!r} to a worker process, so it must be "
                f"defined at module level, importable by name ({type(exc).__name__}: {exc})"
            ) from None


@functools.cache
def _EmptyParams() -> type[BaseModel]:  # noqa: N802 - reads as the model it returns
    """A params model that accepts no params (shared by actions registered without one)."""
    from pydantic import BaseModel, ConfigDict

    class NoParams(BaseModel):
        model_config = ConfigDict(extra="forbid")

    # Importable as ``corec_plugin_kit.routing.NoParams`` (see __getattr__), so its instances
    # can be sent to process handlers.
    NoParams.__qualname__ = "NoParams"
    return NoParams


def __getattr__(name: str) -> Any:
    if name == "NoParams":
        return _EmptyParams()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RoutingTable(Mapping[str, ActionSpec]):
    """Immutable action -> :class:`ActionSpec` mapping; ``route`` raises :class:`UnknownAction`."""

    def __init__(self, specs: Mapping[str, ActionSpec]) -> None:
        self._specs = dict(specs)
        self.route = self._route
        # The worker's look-up, once per command: the dict's own ``get`` (Mapping's is two
        # Python calls, through ``__getitem__`` and a KeyError for an unknown action).
        self.get = self._specs.get  # type: ignore[method-assign]

    def _route(self, action: str) -> ActionSpec:
        try:
            return self._specs[action]
        except KeyError:
            raise UnknownAction(action) from None

    def __getitem__(self, action: str) -> ActionSpec:
        return self._specs[action]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    @classmethod
    def build(cls, claims: list[Register], owners: Mapping[str, str] | None = None) -> RoutingTable:
        """Merge each processor's claims; a conflict needs ``owners[action]`` to name the winner."""
        owners = owners or {}
        table: dict[str, ActionSpec] = {}
        for claim in claims:
            for spec in claim.specs:
                current = table.get(spec.action)
                if current is None:
                    table[spec.action] = spec
                    continue
                winner = owners.get(spec.action)
                if winner == spec.processor:
                    table[spec.action] = spec
                elif winner != current.processor:
                    raise ActionConflict(spec.action, current.claimed_by, spec.claimed_by)
        return cls(table)

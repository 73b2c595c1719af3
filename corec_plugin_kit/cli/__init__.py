"""``corec-kit``: the command line.

One module per concern, dependencies one way (``docs/architecture.md``):

* :mod:`.state`: the global options' ``State`` and the helpers every command uses
  (``get_state``, ``pass_kernel``, ``echo_json``, ``parse_params``, ``with_params``);
* :mod:`.core`: the root group ``cli`` (global options, error printing, ``main``) and the lazy
  mounting of everything else: ``LAZY_COMMANDS`` names each command's module, and one
  ``ProcessorGroup`` per installed processor;
* one module per command group, each importing ``state`` (``completion`` also ``core``), none
  imported by ``core`` except through ``LAZY_COMMANDS``: :mod:`.processors` (``list-processors``,
  ``actions``, ``describe``, ``exec``), :mod:`.check`, :mod:`.completion`, :mod:`.run` (``run``,
  ``send``, ``streams``), :mod:`.asyncapi`, :mod:`.history`. (``corec``, the CoreC install
  command, is ``corec_plugin_kit.corec_install``'s, mounted the same way.)

This package imports ``state`` and ``core`` only, so ``corec-kit --help`` and shell completion
stay cheap. The names below are what the rest of the kit (``api``, ``testing``, ``__main__``)
and processors' CLI code import from here.
"""

from .core import COMPLETE_VAR, LAZY_COMMANDS, PROG, KitGroup, ProcessorGroup, cli, main
from .state import (
    State,
    echo_json,
    get_state,
    params_options,
    parse_params,
    pass_kernel,
    with_params,
)

__all__ = [
    "COMPLETE_VAR",
    "LAZY_COMMANDS",
    "PROG",
    "KitGroup",
    "ProcessorGroup",
    "State",
    "cli",
    "echo_json",
    "get_state",
    "main",
    "params_options",
    "parse_params",
    "pass_kernel",
    "with_params",
]

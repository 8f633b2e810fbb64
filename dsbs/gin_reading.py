"""Reading gin files for the built-in runner: the files T5X reads, parsed by gin without T5X.

`read` clears gin's configuration and parses experiment files, then `KEY=VALUE` bindings, with
gin itself. T5X's own statements are not executed: includes of T5X's gin files (`t5x/...`) read
as empty files, imports of `t5x` modules are served by empty stand-in modules (T5X need not be
installed; they are removed from `sys.modules` afterwards), and bindings of their
configurables are skipped by gin's `skip_unknown`; each is listed in what `read` returns.
Anything else unknown is an error.

gin's exceptions become `ReadError`s of one line: where (file and line, or the binding), what,
and the fix for the usual mistakes (the closest configurable, parameter or macro name; the
quotes a string value needs). A binding that sets a macro nothing reads is an error too. The
experiment definition (`dsbs.experiment.load`) says which macros it reads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.abc
import importlib.machinery
import inspect
import io as std_io
import logging
import os
import re
import sys
from typing import Collection, Iterable, Sequence

import gin

_T5X_MODULES = ("t5x",)  # modules whose configurables only T5X binds


class ReadError(ValueError):
  """A gin file or binding that cannot be read; the message is one line naming it."""


@dataclasses.dataclass(frozen=True)
class Reading:
  """What `read` parsed (the files as found) and the T5X statements it skipped."""
  files: tuple[str, ...]
  skipped: tuple[str, ...]


def did_you_mean(word: str, options: Iterable[str]) -> str:
  """' (did you mean ...?)' with the names closest to `word`, or ''."""
  near = difflib.get_close_matches(word, list(options), n=3)
  return f" (did you mean {', '.join(map(repr, near))}?)" if near else ""


class _T5XOnly(set):
  """gin's `skip_unknown`: skips exactly the configurables of T5X modules, and records them."""

  def __init__(self):
    super().__init__()
    self.aliases: set[str] = set()
    self.skipped: list[str] = []

  def __bool__(self) -> bool:  # gin skips a failed import only when this is truthy
    return True

  def __contains__(self, selector: object) -> bool:
    if not isinstance(selector, str):
      return False
    root = selector.rsplit("/", 1)[-1].split(".")[0]
    if root in self.aliases or root in _T5X_MODULES:
      if selector not in self.skipped:
        self.skipped.append(selector)
      return True
    return False


class _StubT5X(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Serves empty stand-in modules for `t5x...` imports during a parse (T5X need not be
  installed); `read` removes them from sys.modules afterwards. Their origin is a path that does
  not exist, so gin's package-resource reader finds no `t5x/...` include beside them and the
  includes reach `_empty_t5x_file`."""

  def __init__(self, skip: _T5XOnly):
    self.skip = skip
    self.stubbed: list[str] = []

  def find_spec(self, fullname, path, target=None):  # pylint: disable=unused-argument
    if fullname.split(".")[0] not in _T5X_MODULES:
      return None
    self.stubbed.append(fullname)
    self.skip.aliases.add(fullname.split(".")[-1])
    origin = os.path.join(os.sep, "nonexistent-t5x-stand-in", *fullname.split("."),
                          "__init__.py")
    return importlib.machinery.ModuleSpec(fullname, self, origin=origin, is_package=True)

  def create_module(self, spec):
    return None  # the default module object

  def exec_module(self, module):
    module.__path__ = []  # a package: `from t5x.examples.t5 import network` resolves too


_T5X_INCLUDE = re.compile(r"(^|/)t5x/(configs|examples|contrib)/")
_reading: list[list[str]] = []  # stack of "skipped includes" lists while `read` runs


def _t5x_include_readable(path: str) -> bool:
  return bool(_reading) and bool(_T5X_INCLUDE.search(path)) and not os.path.isfile(path)


@contextlib.contextmanager
def _empty_t5x_file(path: str):
  _reading[-1].append(path)
  yield std_io.StringIO("")


gin.config.register_file_reader(_empty_t5x_file, _t5x_include_readable)


class _QuietProbes(logging.Filter):
  """Drops gin's resource reader's log lines for each search-path probe that misses."""

  def filter(self, record: logging.LogRecord) -> bool:
    msg = str(record.msg)
    return not (msg.startswith("Path not found") or msg.startswith("system_path_file_exists"))


def _search_path(base_dir: str) -> None:
  if base_dir not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(base_dir)


def read(gin_files: Sequence[str], bindings: Sequence[str], *, base_dir: str,
         macros: Collection[str]) -> Reading:
  """Clears gin's configuration, then parses `gin_files` then `bindings` ("KEY=VALUE").

  Relative paths (files and includes) are tried from the current directory and from `base_dir`.
  `macros` are the macros the caller reads; a binding may set those, the macros the files define
  and the macros some binding reads (`_check_macros`).
  """
  gin.clear_config()
  _search_path(base_dir)
  files = []
  for f in gin_files:
    path = f
    if not os.path.isabs(f) and not os.path.exists(f) and os.path.exists(os.path.join(base_dir, f)):
      path = os.path.join(base_dir, f)
    if not os.path.exists(path) and "://" not in path:
      raise ReadError(f"gin file {f!r} not found (relative paths are tried from the "
                      f"current directory and from {base_dir})")
    files.append(path)
  skip = _T5XOnly()
  stub = _StubT5X(skip)
  skipped_includes: list[str] = []
  _reading.append(skipped_includes)
  sys.meta_path.insert(0, stub)
  quiet = _QuietProbes()
  logging.getLogger().addFilter(quiet)
  try:
    # What gin.parse_config_files_and_bindings does, one statement source at a time, so that an
    # error names its file or binding and the macros the files define are known to the bindings.
    for path in files:
      try:
        gin.parse_config_file(path, skip_unknown=skip)
      except (ValueError, SyntaxError, NameError, ImportError, IOError, TypeError) as e:
        raise ReadError(_gin_error(e, path)) from None
    defined = _bound_macros()
    set_by: list[tuple[str, set[str]]] = []
    for binding in bindings:
      before = _bound_macros()
      try:
        gin.parse_config(binding, skip_unknown=skip)
      except (ValueError, SyntaxError, NameError, ImportError, TypeError) as e:
        raise ReadError(_gin_error(e, f"binding {binding!r}", binding)) from None
      set_by.append((binding, _bound_macros() - before))
    _check_macros(set_by, defined | set(macros))
  finally:
    sys.meta_path.remove(stub)
    logging.getLogger().removeFilter(quiet)
    _reading.pop()
    for name in stub.stubbed:
      if getattr(sys.modules.get(name), "__loader__", None) is stub:
        del sys.modules[name]
  skipped = ([f"include {p} (a T5X gin file)" for p in skipped_includes]
             + [f"import {m} (a T5X module)" for m in dict.fromkeys(stub.stubbed)
                if not m.endswith(".")]
             + [f"bindings of {s} (a T5X configurable)" for s in skip.skipped])
  return Reading(tuple(files), tuple(skipped))


def _bound_macros() -> set[str]:
  """The macros gin holds a value for (gin lists them only in its config dict, read here)."""
  return {scope for scope, selector in gin.config._CONFIG  # pylint: disable=protected-access
          if selector == "gin.macro"}


def _referenced_macros() -> set[str]:
  """The macros some parsed binding reads (`%NAME`)."""
  refs = gin.config.iterate_references(gin.config._CONFIG,  # pylint: disable=protected-access
                                       to=gin.get_configurable(gin.config.macro))
  return {ref.config_key[0] for ref in refs}


def _check_macros(set_by: list[tuple[str, set[str]]], allowed: set[str]) -> None:
  """A binding may set a macro that is `allowed` or that something reads; anything else is a
  typo (gin would keep `TRAIN_STEPZ = 10` and train the default number of steps)."""
  known = allowed | _referenced_macros()
  for binding, new in set_by:
    for name in sorted(new - known):
      near = difflib.get_close_matches(name, sorted(known), n=1)
      hint = f"did you mean {near[0]}? " if near else ""
      raise ReadError(
          f"binding {binding!r}: no experiment file or binding reads a macro {name} ({hint}the "
          "experiment macros are listed in dsbs/experiment.py)")


_UNPARSED_TOKEN = re.compile(r"Failed to parse token '([^']*)'")
_NO_PARAMETER = re.compile(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'")
_NO_CONFIGURABLE = re.compile(r"No configurable matching '([^']+)'")
_GIN_LOCATION = re.compile(r'\n\s+In (?:file "([^"]+)", line (\d+)|bindings string line \d+).*',
                           re.S)


def _gin_error(err: Exception, where: str, binding: str | None = None) -> str:
  """One line for a gin parse error: where, what, and the fix for the usual mistakes."""
  text = str(err)
  loc = _GIN_LOCATION.search(text)
  if loc:
    text = text[:loc.start()]
    if loc.group(1):
      where = f"{loc.group(1)}:{loc.group(2)}"
  if isinstance(err, SyntaxError) and err.filename and err.lineno:
    where = f"{err.filename}:{err.lineno}"
  text = re.sub(r" \((?:[^()]*, )?line \d+\)$", "", text.strip())
  text = re.sub(r"malformed node or string on line \d+: <ast\.\w+ object at 0x[0-9a-f]+>\s*", "",
                text)
  text = text.rstrip(".")
  token = _UNPARSED_TOKEN.search(text)
  if binding is not None and "=" in binding:
    key = binding.split("=", 1)[0].strip()
    quoted = "--gin.{key}=\"'{value}'\""
  else:
    key, quoted = "", "'{value}'"
  if token and token.group(1).isidentifier():
    text += ("; gin values are Python literals, so a string needs quotes of its own: "
             + quoted.format(key=key, value=token.group(1))
             + (" (the shell removes the outer ones)" if key else ""))
  elif isinstance(err, SyntaxError):
    text += ("; gin values are Python literals: numbers (10, 0.5), True/False/None, lists, dicts "
             "and strings in quotes (" + quoted.format(key=key, value="text") + ")")
  m = _NO_PARAMETER.search(text)
  if m:
    text += did_you_mean(m.group(2), _parameters(m.group(1)))
  m = _NO_CONFIGURABLE.search(text)
  if m:
    text += did_you_mean(m.group(1), _configurable_names(qualified="." in m.group(1)))
  return f"{where}: {' '.join(text.split())}"


def _parameters(selector: str) -> list[str]:
  try:
    fn = gin.get_configurable(selector)
  except ValueError:
    return []
  while hasattr(fn, "__wrapped__"):
    fn = fn.__wrapped__
  try:
    return list(inspect.signature(fn).parameters)
  except (TypeError, ValueError):
    return []


def _configurable_names(qualified: bool) -> set[str]:
  """Registered configurables by their full or their short names (from gin's registry)."""
  selectors = [s for s, _ in gin.config._REGISTRY.items()]  # pylint: disable=protected-access
  return set(selectors) if qualified else {s.rsplit(".", 1)[-1] for s in selectors}


def missing_macro(err: Exception) -> str | None:
  """The macro an unbound-macro error from gin is about, if it is one."""
  text = str(err)
  m = re.search(r"configurable 'macro' .*in scope '([A-Za-z_][A-Za-z0-9_.]*)'", text)
  if m:
    return m.group(1)
  m = re.search(r"^([A-Za-z_][A-Za-z0-9_]*)/macro\.value set to `%gin\.REQUIRED`", text)
  return m.group(1) if m else None


def first_line(err: Exception) -> str:
  """gin appends 'In call to configurable ...' / 'In file ...' context lines: keep the message."""
  return str(err).split("\n  In ")[0]

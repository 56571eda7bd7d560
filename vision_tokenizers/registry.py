"""The registry: one door (`register_tokenizer`) for every tokenizer, built-in or plug-in.

A registration is a `TokenizerSpec` (plain data: name, family, weights, token shape...) and a builder
``build(spec, files, device, dtype) -> tokenizer``, given as a callable or lazily as ``"module:function"`` so that
listing names imports no model code. The built-in families register in `vision_tokenizers.builtin`; plug-ins come
through `vision_tokenizers.plugins` (``--plugin``, ``VTOK_PLUGINS``, entry points ``vtok.tokenizers``). Names with a
scheme prefix (``diffusers:<repo or folder>[#subfolder]``) are resolved into a spec when first used.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from tok.checkpoint import CheckpointError
from vision_tokenizers.spec import TokenizerSpec
from vision_tokenizers.weights import WeightsUnavailable, resolve_weights

Builder = Callable[[TokenizerSpec, dict[str, Path], torch.device, torch.dtype], Any]
# The released-size network with random weights from `spec.random_config`, no files: (spec, device, dtype).
RandomBuilder = Callable[[TokenizerSpec, torch.device, torch.dtype], Any]
# A scheme resolver: (typed name, resolution or None, weights_dir, offline) -> the spec that name stands for.
SchemeResolver = Callable[..., TokenizerSpec]


class RegistrationError(ValueError):
    """A tokenizer name registered twice, or a registration that is not well formed."""


def _resolve_attr(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    if not attr:
        raise RegistrationError(f"builder {ref!r} must be 'module:function'")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Registration:
    """A spec, its builder, who registered it (`origin`, shown in `vtok list` and in errors), and the identity of the
    registering code (`code`: a plug-in's file sha256 or package version; None for built-ins), which goes into the
    tokenizer's config id so that a changed plug-in never resumes rows its previous version measured."""

    spec: TokenizerSpec
    build: Builder | str
    origin: str
    code: dict[str, str] | None = None
    build_random: RandomBuilder | str | None = None

    def builder(self) -> Builder:
        return _resolve_attr(self.build) if isinstance(self.build, str) else self.build

    def random_builder(self) -> RandomBuilder | None:
        return _resolve_attr(self.build_random) if isinstance(self.build_random, str) else self.build_random


def _caller_code(depth: int) -> tuple[str, dict[str, str] | None]:
    """(origin, code identity) of the module that called `register_tokenizer`."""
    from vision_tokenizers import plugins

    module_globals = sys._getframe(depth + 1).f_globals
    module = str(module_globals.get("__name__", "?"))
    file = module_globals.get("__file__")
    if module == "vision_tokenizers" or module.startswith("vision_tokenizers."):
        return f"built-in ({module})", None
    code: dict[str, str] = {"module": module}
    top = module.split(".")[0]
    dists = metadata.packages_distributions().get(top, [])
    if dists:
        code.update(package=dists[0], version=metadata.version(dists[0]))
    if file and Path(file).is_file():
        code["sha256"] = hashlib.sha256(Path(file).read_bytes()).hexdigest()
    where = plugins.current_plugin() or (str(file) if file else module)
    return f"plug-in {where}", code


class Registry:
    """Name -> `Registration`. Read it through `get` / `names` / `entry`; write it only through `register`."""

    def __init__(self) -> None:
        self._entries: dict[str, Registration] = {}
        self._schemes: dict[str, tuple[str | SchemeResolver, Builder | str]] = {}
        self._ready = False

    # ------------------------------------------------------------------------------------------ writing
    def register(self, spec: TokenizerSpec, build: Builder | str, *, origin: str,
                 code: dict[str, str] | None = None, build_random: RandomBuilder | str | None = None) -> TokenizerSpec:
        if not isinstance(spec, TokenizerSpec):
            raise RegistrationError(f"register_tokenizer: expected a TokenizerSpec, got {type(spec).__name__}")
        if not (callable(build) or isinstance(build, str)):
            raise RegistrationError(f"register_tokenizer({spec.name!r}): build must be a callable or 'module:function'")
        if ":" in spec.name.split("@")[0] and spec.name.split(":")[0] in self._schemes:
            raise RegistrationError(f"tokenizer name {spec.name!r} uses the reserved prefix "
                                    f"'{spec.name.split(':')[0]}:'")
        old = self._entries.get(spec.name)
        if old is not None:
            if old.spec == spec and old.code == code and code is not None:
                return spec  # the same plug-in code seen twice (e.g. an entry point and --plugin): nothing changes
            raise RegistrationError(f"tokenizer {spec.name!r} is registered twice: by {old.origin} and by {origin}; "
                                    "rename one of them")
        self._entries[spec.name] = Registration(spec, build, origin, code, build_random)
        return spec

    def register_scheme(self, prefix: str, resolve: str | SchemeResolver, build: Builder | str) -> None:
        """Names ``<prefix>:<anything>`` are resolved into a spec by `resolve` when first used."""
        self._schemes[prefix] = (resolve, build)

    @contextlib.contextmanager
    def replaced(self, spec: TokenizerSpec, build: Builder | str | None = None) -> Iterator[TokenizerSpec]:
        """For tests: `spec` replaces (or adds) the registration of its name inside the block."""
        self._ensure()
        old = self._entries.get(spec.name)
        builder = build if build is not None else (old.build if old else None)
        if builder is None:
            raise RegistrationError(f"replaced({spec.name!r}): a new name needs a builder")
        self._entries[spec.name] = Registration(spec, builder, "test override", old.code if old else None,
                                                old.build_random if old and build is None else None)
        try:
            yield spec
        finally:
            if old is None:
                self._entries.pop(spec.name, None)
            else:
                self._entries[spec.name] = old

    # ------------------------------------------------------------------------------------------ reading
    def _ensure(self) -> None:
        """Built-ins, then installed entry points and VTOK_PLUGINS: the same discovery for every front end."""
        if self._ready:
            return
        self._ready = True
        importlib.import_module("vision_tokenizers.builtin")
        from vision_tokenizers import plugins

        plugins.discover()

    def scheme_of(self, name: str) -> str | None:
        """The scheme prefix of a name like ``diffusers:stabilityai/sdxl-vae``, or None for a registered name."""
        self._ensure()
        prefix, sep, rest = name.partition(":")
        return prefix if sep and rest and prefix in self._schemes and name not in self._entries else None

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return isinstance(name, str) and (name in self._entries or self.scheme_of(name) is not None)

    def names(self, tiny: bool | None = False) -> list[str]:
        """Registered names: real ones (tiny=False), the tiny test models (tiny=True), or all (tiny=None)."""
        self._ensure()
        return [n for n, e in self._entries.items() if tiny is None or e.spec.tiny == tiny]

    def select(self, option: str) -> list[str]:
        """``all`` / ``tiny`` / ``a,b,diffusers:folder``: the names it selects; unknown names are one KeyError."""
        names = list(dict.fromkeys(n.strip() for n in option.split(",") if n.strip()))
        if names == ["all"]:
            return self.names()
        if names == ["tiny"]:
            return self.names(tiny=True)
        unknown = [n for n in names if n not in self]
        if unknown or not names:
            raise KeyError(f"unknown tokenizer {', '.join(unknown) or repr(option)}; known: "
                           f"{', '.join(self.names(tiny=None))} (or all, tiny, "
                           f"{', '.join(f'{p}:<name>' for p in self._schemes)})")
        return names

    def entry(self, name: str, *, resolution: int | None = None, weights_dir: str | Path | None = None,
              offline: bool | None = None) -> Registration:
        """The registration of `name`; a scheme name is resolved into one here (reading its config)."""
        self._ensure()
        if name in self._entries:
            return self._entries[name]
        scheme = self.scheme_of(name)
        if scheme is None:
            raise KeyError(f"unknown tokenizer {name!r}; known: {', '.join(self._entries)}")
        resolve, build = self._schemes[scheme]
        resolve = _resolve_attr(resolve) if isinstance(resolve, str) else resolve
        spec = resolve(name, resolution=resolution, weights_dir=weights_dir, offline=offline)
        return Registration(spec, build, f"{scheme}: name (config from {name.partition(':')[2]})")

    def check(self, name: str, **resolve: Any) -> None:
        """Resolve a scheme name now, without downloading, so that a wrong folder or a model class that is not an
        image autoencoder is a usage error before anything runs (ValueError). Files not on this machine yet are
        fetched, or skipped with their reason, when the tokenizer loads."""
        if self.scheme_of(name) is None:
            return
        with contextlib.suppress(WeightsUnavailable):
            self.get(name, **{**resolve, "offline": True})

    def get(self, name: str, **resolve: Any) -> TokenizerSpec:
        return self.entry(name, **resolve).spec

    def static_spec(self, name: str) -> TokenizerSpec | None:
        """The spec of a registered name without resolving anything (None for a scheme name)."""
        self._ensure()
        entry = self._entries.get(name)
        return entry.spec if entry else None


REGISTRY = Registry()
REGISTRY.register_scheme("diffusers", "vision_tokenizers.diffusers_autoencoder:spec_for_name",
                         "vision_tokenizers.diffusers_autoencoder:build")


def register_tokenizer(spec: TokenizerSpec, build: Builder | str, *, origin: str | None = None,
                       build_random: RandomBuilder | str | None = None) -> TokenizerSpec:
    """Register a tokenizer: `spec` says what it is, `build(spec, files, device, dtype)` makes it (a callable, or
    ``"module:function"`` imported when it is first loaded). `files` maps each of the spec's `WeightFile` names to
    the local path it resolved to (weights folder, hub cache or download; sha256-checked), exactly as for the
    built-in tokenizers. `build_random(spec, device, dtype)` (optional) makes the same network at its released size
    with random weights from `spec.random_config` and no files (`load(..., random_weights=True)`: speed only). A name
    registered twice is an error naming both origins."""
    where, code = _caller_code(1)
    return REGISTRY.register(spec, build, origin=origin or where, code=code, build_random=build_random)


def list_tokenizers(include_tiny: bool = False) -> list[str]:
    return REGISTRY.names(tiny=None if include_tiny else False)


def get_spec(name: str, **resolve: Any) -> TokenizerSpec:
    """The spec of `name` (a scheme name such as ``diffusers:...`` is resolved: resolution=, weights_dir=, offline=)."""
    return REGISTRY.get(name, **resolve)


def load(name: str, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32,
         weights_dir: str | Path | None = None, offline: bool | None = None, *, preset: str | None = None,
         settings: dict[str, Any] | None = None, resolution: int | None = None, random_weights: bool = False):
    """Build tokenizer `name` with its weights (local folder, hub cache or download; sha256-checked).

    `preset` / `settings` choose generation settings of sampling de-tokenizers (defaults in the spec).
    `resolution` sizes a tokenizer whose spec comes from its name (``diffusers:...``; default 256).
    Raises `WeightsUnavailable` with a one-line message when the files cannot be had or are unusable (missing,
    truncated, wrong checksum, not matching the network). Any other exception is a bug and propagates as it is.
    `random_weights`: the released-size network with seeded random weights, built from `spec.random_config` by the
    registration's `build_random`; no file is read or downloaded (`RandomWeightsUnsupported`, a
    `WeightsUnavailable`, where there is no such config). For timing only: its outputs mean nothing.
    """
    from vision_tokenizers.base import DTYPES
    from vision_tokenizers.random_weights import unsupported

    if random_weights and REGISTRY.scheme_of(name) is not None:  # its config is one of its files
        raise unsupported(name)
    entry = REGISTRY.entry(name, resolution=resolution, weights_dir=weights_dir, offline=offline)
    spec = entry.spec
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    chosen = spec.resolved_settings(preset, settings)
    if random_weights:
        build_random = entry.random_builder()
        if build_random is None or spec.random_config is None:
            raise unsupported(name)
        files: dict[str, Path] = {}
        tokenizer = build_random(spec, torch.device(device), dtype)
    else:
        files = resolve_weights(spec, weights_dir, offline)
        try:
            tokenizer = entry.builder()(spec, files, torch.device(device), dtype)
        except CheckpointError as exc:
            paths = ", ".join(str(p) for p in files.values())
            raise WeightsUnavailable(
                f"weights for {name} unreadable ({exc.one_line()}): {paths}; delete the file(s) to download them "
                "again, or replace them with the released files") from exc
    tokenizer.random_weights = random_weights
    tokenizer.settings = chosen
    tokenizer.weight_files = {k: str(v) for k, v in files.items()}
    tokenizer.code = dict(entry.code) if entry.code else None
    return tokenizer


"""One registry for every kind of named, pluggable thing: models, datasets, pruners, attributions.

A :class:`Registry` is a dict from name to entry that refuses a second entry under a taken name, so that a
user's ``@register_...`` can never silently replace a built-in one. Each kind keeps its own decorator (its
docstring says where the name is then accepted); they all end here.
"""

from __future__ import annotations


class Registry(dict):
    """``Registry("pruner")``: entries by name; :meth:`add` refuses a name that is taken."""

    def __init__(self, kind: str, entries=()):
        super().__init__(entries)
        self.kind = kind

    def add(self, name: str, entry):
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered; register it under another name")
        self[name] = entry
        return entry

    def add_class(self, cls: type, base: type) -> type:
        """Register a subclass of ``base`` under its ``name`` attribute (the class decorators' body)."""
        if not (isinstance(cls, type) and issubclass(cls, base)) or not getattr(cls, "name", None):
            raise TypeError(f"a {self.kind} is a {base.__name__} subclass with a `name`, got {cls!r}")
        self.add(cls.name, cls)
        return cls

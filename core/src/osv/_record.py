"""Plain record classes, compared, hashed and shown by the fields in their
``__slots__``: what the boot path uses instead of dataclasses."""

from __future__ import annotations

# Rationale: @dataclass builds __init__, __repr__ and __eq__ as source text and
# runs it through exec(), about half a millisecond a class (twice that when
# frozen), and `osv run` imports a couple of dozen such records before the
# program starts. Here each record writes its own __init__ (so its signature
# reads as plainly as a dataclass's fields) and lists its fields, in order, in
# __slots__; these bases compare and print them the way a dataclass does:
# equal only to an instance of the very same class with equal fields, and
# shown as ``Name(field=value, ...)``.


class Record:
    """A mutable record: compared and shown by its fields, unhashable."""

    __slots__ = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    # Equal records must hash alike, and a mutable one can change: no hash, as
    # for a dataclass that is neither frozen nor told otherwise.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({fields})"


class FrozenRecord(Record):
    """A record whose fields are set once, by ``__init__``; hashable.

    ``__init__`` sets each field with ``object.__setattr__``; assigning or
    deleting a field afterwards raises AttributeError.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: the record is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: the record is frozen")

    def __hash__(self) -> int:
        return hash(self._values())

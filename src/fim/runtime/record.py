"""Frozen records for the runtime, without the cost of `dataclasses` at start-up.

`dataclasses` pulls in `inspect` (and with it `re`, `ast`, `dis`, `tokenize`)
and generates code with exec(): more than 12 ms before the first mount on a
typical host. The runtime needs only frozen records with keyword or positional
construction, defaults, equality and a repr; this decorator provides exactly
that. Type checkers see the standard decorator, so the classes are checked as
ordinary frozen dataclasses.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass as dataclass
    from dataclasses import replace as replace
else:

    def replace(record, **changes):
        """A copy of `record` with `changes`."""
        values = {n: getattr(record, n) for n in type(record).__fields__}
        values.update(changes)
        return type(record)(**values)

    def dataclass(frozen=True):
        def wrap(cls):
            names = tuple(cls.__dict__.get("__annotations__", {}))
            defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}

            def __init__(self, *args, **kwargs):
                if len(args) > len(names):
                    raise TypeError(f"{cls.__name__}() takes {len(names)} arguments")
                values = dict(zip(names, args))
                for key, value in kwargs.items():
                    if key not in names or key in values:
                        raise TypeError(f"{cls.__name__}() got an unexpected or repeated '{key}'")
                    values[key] = value
                for name in names:
                    if name not in values:
                        if name not in defaults:
                            raise TypeError(f"{cls.__name__}() missing '{name}'")
                        values[name] = defaults[name]
                    object.__setattr__(self, name, values[name])

            def _values(self):
                return tuple(getattr(self, n) for n in names)

            def __eq__(self, other):
                if type(other) is not type(self):
                    return NotImplemented
                return _values(self) == _values(other)

            def __repr__(self):
                fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
                return f"{cls.__name__}({fields})"

            def __setattr__(self, name, value):
                raise AttributeError(f"cannot assign to field '{name}' of a frozen record")

            cls.__init__ = __init__
            cls.__fields__ = names
            cls.__eq__ = __eq__
            cls.__hash__ = lambda self: hash(_values(self))
            cls.__repr__ = __repr__
            if frozen:
                cls.__setattr__ = __setattr__
                cls.__delattr__ = __setattr__
            return cls

        return wrap

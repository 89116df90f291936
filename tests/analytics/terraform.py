"""Terraform configurations read with python-hcl2, and their expressions evaluated in Python.

`terraform plan` needs the google provider, which cannot be downloaded here, so the tests evaluate
what they need themselves: a module's `locals` (the Dataproc job's `job_args` above all) with the
values an example gives its `module` block, from the example's variables, its `terraform.tfvars`
and what the test sets. The evaluator walks python-hcl2's parse tree and knows the subset of HCL the
analytics configuration uses: strings with interpolation, references to variables, locals,
`path.module`, `each`, for-loop symbols and the arguments of resources (a resource's attribute is
known when the configuration sets it, like a bucket's `name`; computed ones like `.email` are not),
tuples, objects, `for` expressions, conditionals, comparisons and the functions listed in
`FUNCTIONS`. Anything else raises `Unsupported`, so a change to the module that this cannot follow
fails the test loudly instead of evaluating to something else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from lark import Token, Tree


class Unsupported(ValueError):
    """An expression or reference the evaluator does not follow."""


def _trees(node: Tree) -> list[Tree]:
    """The child nodes that carry meaning (not punctuation, new lines or comments)."""
    return [child for child in node.children if isinstance(child, Tree) and child.data != "new_line_or_comment"]


def _name(node: Tree) -> str:
    (token,) = node.children
    return str(token)


def _label(node: Tree) -> str:
    """A block label: a string literal (`"google_x"`) or an identifier."""
    if node.data == "identifier":
        return _name(node)
    parts = [p for p in _trees(node) if p.data == "string_part"]
    return "".join(str(p.children[0]) for p in parts)


@dataclass
class Configuration:
    """The top-level blocks of every `*.tf` file of one directory, as parse trees."""

    directory: Path
    variables: dict[str, dict[str, Tree]] = field(default_factory=dict)
    locals: dict[str, Tree] = field(default_factory=dict)
    resources: dict[tuple[str, str], dict[str, Tree]] = field(default_factory=dict)
    modules: dict[str, dict[str, Tree]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Tree]] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> Configuration:
        config = cls(directory)
        for path in sorted(directory.glob("*.tf")):
            body = hcl2.parses_to_tree(path.read_text()).children[0]
            for block in (node for node in _trees(body) if node.data == "block"):
                kind, *labels = [_label(n) for n in _trees(block) if n.data in ("identifier", "string")]
                attributes = _attributes(next(n for n in _trees(block) if n.data == "body"))
                if kind == "variable":
                    config.variables[labels[0]] = attributes
                elif kind == "locals":
                    config.locals.update(attributes)
                elif kind == "resource":
                    config.resources[(labels[0], labels[1])] = attributes
                elif kind == "module":
                    config.modules[labels[0]] = attributes
                elif kind == "output":
                    config.outputs[labels[0]] = attributes
        return config


def _attributes(body: Tree) -> dict[str, Tree]:
    """The `name = expression` lines of a block body (nested blocks are left out)."""
    found = {}
    for attribute in (node for node in _trees(body) if node.data == "attribute"):
        name, expression = _trees(attribute)
        found[_name(name)] = expression
    return found


def load_tfvars(path: Path) -> dict[str, Tree]:
    return _attributes(hcl2.parses_to_tree(path.read_text()).children[0])


# --- values --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceInstance:
    """One instance of a resource: its attributes are the expressions its block sets."""

    evaluator: Evaluator
    kind: str
    name: str
    each: dict[str, Any] | None = None

    def attribute(self, attribute: str) -> Any:
        body = self.evaluator.config.resources[(self.kind, self.name)]
        if attribute not in body:
            raise Unsupported(f"{self.kind}.{self.name}.{attribute} is computed by the provider")
        scope = {"each": self.each} if self.each is not None else {}
        return self.evaluator.value(body[attribute], scope)


def _set(values: Any) -> list[Any]:
    return sorted(set(values), key=json.dumps)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "concat": lambda *lists: [item for items in lists for item in items],
    "flatten": lambda items: [x for item in items for x in (item if isinstance(item, list) else [item])],
    "contains": lambda items, value: value in items,
    "coalesce": lambda *values: next(v for v in values if v not in (None, "")),
    "merge": lambda *maps: {k: v for m in maps for k, v in m.items()},
    "toset": _set,
    "tostring": str,
    "trimspace": str.strip,
    "join": lambda separator, items: separator.join(items),
    "split": lambda separator, text: text.split(separator),
    "length": len,
}

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _unescape(text: str) -> str:
    text = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)
    return text.replace("$${", "${").replace("%%{", "%{")


class Evaluator:
    """Evaluates expressions of one configuration, given its input variables' values."""

    def __init__(self, config: Configuration, *, variables: dict[str, Any]) -> None:
        self.config = config
        unknown = set(variables) - set(config.variables)
        if unknown:
            raise Unsupported(f"{config.directory} declares no variables {sorted(unknown)}")
        self.variables: dict[str, Any] = {}
        for name, declaration in config.variables.items():
            if name in variables:
                self.variables[name] = variables[name]
            elif "default" in declaration:
                self.variables[name] = self.value(declaration["default"], {})
            else:
                raise Unsupported(f"variable {name} is required and was not given")
        self._locals: dict[str, Any] = {}

    def local(self, name: str) -> Any:
        if name not in self._locals:
            self._locals[name] = self.value(self.config.locals[name], {})
        return self._locals[name]

    # -- the walk ---------------------------------------------------------------------------------------
    def value(self, node: Tree, scope: dict[str, Any]) -> Any:
        handler = getattr(self, f"_{node.data}", None)
        if handler is None:
            raise Unsupported(f"HCL {node.data} is not evaluated here")
        return handler(node, scope)

    def _expr_term(self, node: Tree, scope: dict[str, Any]) -> Any:
        (inner,) = _trees(node)
        return self.value(inner, scope)

    def _string(self, node: Tree, scope: dict[str, Any]) -> str:
        text = []
        for part in (p for p in _trees(node) if p.data == "string_part"):
            (piece,) = part.children
            if isinstance(piece, Token):
                text.append(_unescape(str(piece)))
            else:
                value = self.value(piece, scope)
                text.append(value if isinstance(value, str) else json.dumps(value))
        return "".join(text)

    def _interpolation(self, node: Tree, scope: dict[str, Any]) -> Any:
        (inner,) = _trees(node)
        return self.value(inner, scope)

    def _int_lit(self, node: Tree, _scope: dict[str, Any]) -> int:
        return int(str(node.children[0]))

    def _float_lit(self, node: Tree, _scope: dict[str, Any]) -> float:
        return float(str(node.children[0]))

    def _literal_value(self, node: Tree, _scope: dict[str, Any]) -> Any:
        return {"true": True, "false": False, "null": None}[str(node.children[0])]

    def _tuple(self, node: Tree, scope: dict[str, Any]) -> list[Any]:
        return [self.value(item, scope) for item in _trees(node)]

    def _object(self, node: Tree, scope: dict[str, Any]) -> dict[str, Any]:
        result = {}
        for element in _trees(node):
            key_node, value_node = _trees(element)
            (key_expression,) = _trees(key_node)
            (key,) = _trees(key_expression)
            result[_name(key) if key.data == "identifier" else self.value(key, scope)] = self.value(value_node, scope)
        return result

    def _function_call(self, node: Tree, scope: dict[str, Any]) -> Any:
        name, *rest = _trees(node)
        function = FUNCTIONS.get(_name(name))
        if function is None:
            raise Unsupported(f"function {_name(name)}()")
        arguments = [self.value(argument, scope) for argument in _trees(rest[0])] if rest else []
        return function(*arguments)

    def _conditional(self, node: Tree, scope: dict[str, Any]) -> Any:
        condition, when_true, when_false = _trees(node)
        return self.value(when_true if self.value(condition, scope) else when_false, scope)

    def _unary_op(self, node: Tree, scope: dict[str, Any]) -> Any:
        operator = str(node.children[0])
        (operand,) = _trees(node)
        value = self.value(operand, scope)
        return not value if operator == "!" else -value

    def _binary_op(self, node: Tree, scope: dict[str, Any]) -> Any:
        left_node, term = _trees(node)
        operator_node, right_node = _trees(term)
        operator = _name(operator_node)
        left = self.value(left_node, scope)
        if operator == "&&":
            return bool(left) and bool(self.value(right_node, scope))
        if operator == "||":
            return bool(left) or bool(self.value(right_node, scope))
        right = self.value(right_node, scope)
        operations: dict[str, Callable[[Any, Any], Any]] = {
            "==": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
            "+": lambda a, b: a + b,
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
        }
        if operator not in operations:
            raise Unsupported(f"operator {operator}")
        return operations[operator](left, right)

    def _for_tuple_expr(self, node: Tree, scope: dict[str, Any]) -> list[Any]:
        intro, body, *condition = _trees(node)
        return [self.value(body, inner) for inner in self._iterations(intro, condition, scope)]

    def _for_object_expr(self, node: Tree, scope: dict[str, Any]) -> dict[str, Any]:
        intro, key, value, *condition = [n for n in _trees(node) if n.data != "ellipsis"]
        return {self.value(key, inner): self.value(value, inner) for inner in self._iterations(intro, condition, scope)}

    def _iterations(self, intro: Tree, condition: list[Tree], scope: dict[str, Any]) -> list[dict[str, Any]]:
        *symbols, collection_node = _trees(intro)
        names = [_name(symbol) for symbol in symbols]
        collection = self.value(collection_node, scope)
        pairs = list(collection.items()) if isinstance(collection, dict) else list(enumerate(collection))
        scopes = []
        for key, item in pairs:
            inner = {**scope, **({names[0]: item} if len(names) == 1 else {names[0]: key, names[1]: item})}
            if condition and not self.value(_trees(condition[0])[0], inner):
                continue
            scopes.append(inner)
        return scopes

    # -- references -------------------------------------------------------------------------------------
    def _identifier(self, node: Tree, scope: dict[str, Any]) -> Any:
        return self._reference([_name(node)], scope)

    def _get_attr_expr_term(self, node: Tree, scope: dict[str, Any]) -> Any:
        return self._traverse(node, scope)

    def _index_expr_term(self, node: Tree, scope: dict[str, Any]) -> Any:
        return self._traverse(node, scope)

    def _traverse(self, node: Tree, scope: dict[str, Any]) -> Any:
        """`a.b["c"].d`: the root and its steps, resolved left to right."""
        steps: list[tuple[str, Any]] = []
        while True:
            if node.data == "expr_term":
                (node,) = _trees(node)
            elif node.data == "get_attr_expr_term":
                base, attribute = _trees(node)
                steps.append(("attr", _name(_trees(attribute)[0])))
                node = base
            elif node.data == "index_expr_term":
                base, index = _trees(node)
                steps.append(("index", self.value(_trees(index)[0], scope)))
                node = base
            else:
                break
        steps.reverse()
        if node.data != "identifier":
            value = self.value(node, scope)
        else:
            # Named roots consume their first step: var.x, local.x, path.module, <type>.<name>.
            root = _name(node)
            if root in ("var", "local", "path", "each", "count") or (root not in scope and steps):
                if not steps or steps[0][0] != "attr":
                    raise Unsupported(f"a reference to {root} without an attribute")
                value = self._reference([root, steps.pop(0)[1]], scope)
            else:
                value = self._reference([root], scope)
        for kind, step in steps:
            value = self._step(value, kind, step)
        return self._materialize(value)

    def _reference(self, path: list[str], scope: dict[str, Any]) -> Any:
        root = path[0]
        if len(path) == 1:
            if root in scope:
                return scope[root]
            raise Unsupported(f"symbol {root}")
        name = path[1]
        if root == "var":
            return self.variables[name]
        if root == "local":
            return self.local(name)
        if root == "path" and name == "module":
            return str(self.config.directory)
        if root == "each":
            return scope["each"][name]
        if (root, name) in self.config.resources:
            return _ResourceReference(self, root, name)
        raise Unsupported(f"reference {'.'.join(path)}")

    def _step(self, value: Any, kind: str, step: Any) -> Any:
        if isinstance(value, _ResourceReference):
            if kind == "index":
                return value.instance(step)
            value = value.instance(None)
        if isinstance(value, ResourceInstance):
            if kind != "attr":
                raise Unsupported(f"index into {value.kind}.{value.name}")
            return value.attribute(step)
        return value[step]

    def _materialize(self, value: Any) -> Any:
        if isinstance(value, _ResourceReference):
            return value.instances()
        return value


@dataclass(frozen=True)
class _ResourceReference:
    evaluator: Evaluator
    kind: str
    name: str

    @property
    def _body(self) -> dict[str, Tree]:
        return self.evaluator.config.resources[(self.kind, self.name)]

    def instances(self) -> Any:
        if "for_each" in self._body:
            each = self.evaluator.value(self._body["for_each"], {})
            pairs = each.items() if isinstance(each, dict) else ((k, k) for k in each)
            return {
                key: ResourceInstance(self.evaluator, self.kind, self.name, {"key": key, "value": item})
                for key, item in pairs
            }
        if "count" in self._body:
            raise Unsupported(f"{self.kind}.{self.name} has a count")
        return ResourceInstance(self.evaluator, self.kind, self.name)

    def instance(self, key: Any) -> ResourceInstance:
        found = self.instances()
        if isinstance(found, dict):
            return found[key]
        if key is not None:
            raise Unsupported(f"{self.kind}.{self.name} has no for_each to index")
        return found


# --- the example and the module it calls -----------------------------------------------------------------


def module_inputs(
    example: Path, *, variables: dict[str, Any], module: str = "analytics"
) -> tuple[Path, dict[str, Any]]:
    """The directory of the module the example calls and the values of its `module` block's arguments,
    evaluated with the example's variables: their defaults, `terraform.tfvars.example` (the file an
    operator copies to `terraform.tfvars`), then `variables`."""
    config = Configuration.load(example)
    given: dict[str, Any] = {}
    tfvars = example / "terraform.tfvars.example"
    bare = Evaluator.__new__(Evaluator)
    bare.config, bare.variables, bare._locals = config, {}, {}
    for name, expression in load_tfvars(tfvars).items():
        given[name] = bare.value(expression, {})
    given.update(variables)
    evaluator = Evaluator(config, variables=given)
    call = dict(config.modules[module])
    source = (example / evaluator.value(call.pop("source"), {})).resolve()
    return source, {name: evaluator.value(expression, {}) for name, expression in call.items()}


def module_locals(example: Path, *, variables: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The module's locals `names`, as the example's call with these variables makes them."""
    source, inputs = module_inputs(example, variables=variables)
    evaluator = Evaluator(Configuration.load(source), variables=inputs)
    return {name: evaluator.local(name) for name in names}

"""The synthesised stacks as CloudFormation deploys them: resources in dependency order, and every
intrinsic function evaluated to the value CloudFormation would hand to the resource.

`Deployment` knows nothing about local servers: whoever deploys (`estate.LocalEstate`) creates each
resource and records its physical id and attributes; `Ref` and `Fn::GetAtt` then read those. A
resource nobody creates (a VPC, a role) gets an opaque physical id and ARN, enough for the values
that only name it; any other attribute of it is `NotEmulated`, so a value the rehearsal cannot
produce fails loudly instead of turning into a plausible string.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.cdk.generated import Templates
from tests.cdk.rehearsal.processes import RehearsalError


class NotEmulated(RehearsalError):
    """A template value the rehearsal has no local realisation for (the message names the resource)."""


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()
DYNAMIC_REFERENCE = re.compile(r"\{\{resolve:(?P<service>ssm|ssm-secure|secretsmanager):(?P<reference>[^}]+)\}\}")
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


@dataclass(eq=False)
class Resource:
    """One logical resource of one stack, and what its deployment made of it."""

    stack: str
    stack_name: str
    logical_id: str
    type: str
    definition: dict[str, Any]
    physical_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # Attributes computed on first use (values that need what only AWS has are then never computed).
    lazy: dict[str, Callable[[], Any]] = field(default_factory=dict)
    deployed: bool = False
    skipped: bool = False
    # Why the resource has no local realisation (its attributes then are NotEmulated).
    not_run: str = ""

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.definition.get("Properties") or {})

    @property
    def address(self) -> str:
        return f"{self.stack_name}/{self.logical_id}"

    def __str__(self) -> str:
        return f"{self.address} ({self.type})"


def service_of(resource_type: str) -> str:
    """`AWS::SecretsManager::Secret` -> `secretsmanager`, as ARNs spell the service."""
    parts = resource_type.split("::")
    return parts[1].lower() if len(parts) > 2 else "custom"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise RehearsalError(f"{value!r} is not a string where CloudFormation needs one")


class Deployment:
    """Every stack of one CDK environment, deployed in order; `evaluate` answers as CloudFormation would."""

    def __init__(self, templates: Templates, *, account: str) -> None:
        self.templates = templates
        self.config = templates.config
        self.region = self.config.region
        self.account = account
        self.resources: dict[tuple[str, str], Resource] = {}
        for (stack, logical_id), definition in templates.resources().items():
            self.resources[(stack, logical_id)] = Resource(
                stack=stack,
                stack_name=templates.stack_name(stack),
                logical_id=logical_id,
                type=definition["Type"],
                definition=definition,
            )
        self.stack_ids = {
            stack: f"arn:aws:cloudformation:{self.region}:{account}:stack/{templates.stack_name(stack)}/{uuid.uuid4()}"
            for stack in templates.stacks
        }
        self._exports: dict[str, tuple[str, Any]] = {}
        for stack, template in templates.templates.items():
            for output in (template.get("Outputs") or {}).values():
                name = (output.get("Export") or {}).get("Name")
                if isinstance(name, str):
                    self._exports[name] = (stack, output["Value"])
        # Reads a secret's SecretString for `{{resolve:secretsmanager:...}}`; set by whoever deploys.
        self.read_secret: Callable[[str], str] | None = None

    # --- lookups ---------------------------------------------------------------------------------------
    def resource(self, stack: str, logical_id: str) -> Resource:
        try:
            return self.resources[(stack, logical_id)]
        except KeyError:
            raise RehearsalError(
                f"{self.templates.stack_name(stack)} refers to {logical_id}, which it does not declare"
            ) from None

    def of_type(self, resource_type: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.type == resource_type and not r.skipped]

    def by_physical_id(self, resource_type: str, physical_id: str) -> Resource:
        for resource in self.of_type(resource_type):
            if resource.deployed and physical_id in (resource.physical_id, resource.attributes.get("Arn")):
                return resource
        raise RehearsalError(f"no deployed {resource_type} is {physical_id!r}")

    def arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account if account else ''}:{resource}"

    def generated_name(self, resource: Resource, *, max_length: int = 64, lowercase: bool = False) -> str:
        """The name CloudFormation makes up for a resource the template leaves unnamed:
        `<stack name>-<logical id>-<random suffix>`, shortened to fit the service's limit."""
        alphabet = string.ascii_lowercase + string.digits if lowercase else string.ascii_uppercase + string.digits
        suffix = "".join(secrets.choice(alphabet) for _ in range(12))
        room = max_length - len(suffix) - 2
        stack_part = resource.stack_name[: room // 2]
        logical_part = resource.logical_id[: room - len(stack_part)]
        name = f"{stack_part}-{logical_part}-{suffix}"
        return name.lower() if lowercase else name

    # --- deploy order ----------------------------------------------------------------------------------
    def stack_order(self) -> list[str]:
        """Stacks so that every stack comes after the stacks whose exports it imports."""
        needs: dict[str, set[str]] = {stack: set() for stack in self.templates.stacks}
        for stack, template in self.templates.templates.items():
            for name in _imports(template):
                if name not in self._exports:
                    raise RehearsalError(f"{self.templates.stack_name(stack)} imports {name!r}, which no stack exports")
                exporter = self._exports[name][0]
                if exporter != stack:
                    needs[stack].add(exporter)
        return _topological(list(self.templates.stacks), needs, what="stacks")

    def order(self) -> list[Resource]:
        """Every resource after those it refers to (Ref, GetAtt, Sub, DependsOn), stack by stack."""
        ordered: list[Resource] = []
        for stack in self.stack_order():
            template = self.templates.templates[stack]
            resources = template.get("Resources") or {}
            needs: dict[str, set[str]] = {}
            for logical_id, definition in resources.items():
                depends = definition.get("DependsOn") or []
                references = set(_references(definition.get("Properties") or {}))
                references |= set([depends] if isinstance(depends, str) else depends)
                needs[logical_id] = {r for r in references if r in resources}
            ordered += [self.resource(stack, lid) for lid in _topological(list(resources), needs, what=stack)]
        return ordered

    def deploy(self, create: Callable[[Resource], None]) -> None:
        """Create every resource in order with `create`, which records physical ids and attributes."""
        for resource in self.order():
            condition = resource.definition.get("Condition")
            if condition is not None and not self.condition(resource.stack, condition):
                resource.skipped = True
                continue
            try:
                create(resource)
            except RehearsalError as exc:
                raise RehearsalError(f"CREATE_FAILED {resource}: {exc}") from exc
            except Exception as exc:
                raise RehearsalError(f"CREATE_FAILED {resource}: {type(exc).__name__}: {exc}") from exc
            resource.deployed = True

    # --- Ref and Fn::GetAtt --------------------------------------------------------------------------
    def ref(self, resource: Resource) -> str:
        self._require_deployed(resource, "Ref")
        if resource.physical_id is None:
            # An opaque id for a resource with no local realisation (a subnet, a role).
            resource.physical_id = f"{resource.logical_id.lower()}-{secrets.token_hex(4)}"
        return resource.physical_id

    def get_att(self, resource: Resource, attribute: str) -> Any:
        self._require_deployed(resource, f"Fn::GetAtt {attribute}")
        if attribute in resource.attributes:
            return resource.attributes[attribute]
        if attribute in resource.lazy:
            resource.attributes[attribute] = resource.lazy.pop(attribute)()
            return resource.attributes[attribute]
        if resource.not_run:
            raise NotEmulated(f"{resource}.{attribute}: {resource.not_run}")
        if attribute == "Arn" and resource.type.startswith("AWS::"):
            arn = self.arn(service_of(resource.type), f"{resource.logical_id.lower()}/{self.ref(resource)}")
            resource.attributes["Arn"] = arn
            return arn
        raise NotEmulated(f"{resource}.{attribute} has no local value (the rehearsal does not create this resource)")

    def _require_deployed(self, resource: Resource, what: str) -> None:
        if resource.skipped:
            raise RehearsalError(f"{what} of {resource}, whose Condition is false: CloudFormation refuses the template")
        if not resource.deployed:
            raise RehearsalError(
                f"{what} of {resource} before it was created: a dependency the template does not state"
            )

    # --- evaluation ------------------------------------------------------------------------------------
    def prop(self, resource: Resource, name: str, default: Any = NO_VALUE) -> Any:
        """One property of `resource`, evaluated, dynamic references resolved (as at create time)."""
        raw = resource.properties.get(name, NO_VALUE)
        if raw is NO_VALUE:
            return default
        value = self.evaluate(resource.stack, raw)
        return default if value is NO_VALUE else self._dynamic(value)

    def properties(self, resource: Resource, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        values = {name: self.prop(resource, name) for name in resource.properties if name not in skip}
        return {name: value for name, value in values.items() if value is not NO_VALUE}

    def evaluate(self, stack: str, value: Any) -> Any:
        """`value` (an expression in `stack`'s template) as CloudFormation evaluates it."""
        if isinstance(value, list):
            return [v for v in (self.evaluate(stack, item) for item in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Ref" or function.startswith("Fn::") or function == "Condition":
                return self._intrinsic(stack, function, argument)
        evaluated = {key: self.evaluate(stack, item) for key, item in value.items()}
        return {key: item for key, item in evaluated.items() if item is not NO_VALUE}

    def condition(self, stack: str, name: str) -> bool:
        conditions = self.templates.templates[stack].get("Conditions") or {}
        if name not in conditions:
            raise RehearsalError(f"{self.templates.stack_name(stack)} has no condition {name}")
        return bool(self.evaluate(stack, conditions[name]))

    def _intrinsic(self, stack: str, function: str, argument: Any) -> Any:
        if function == "Ref":
            return self._ref_name(stack, argument)
        if function == "Fn::GetAtt":
            logical_id, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
            return self.get_att(self.resource(stack, logical_id), self._text(stack, attribute))
        if function == "Fn::Join":
            separator, items = argument
            return _text(separator).join(_text(v) for v in self._list(stack, items))
        if function == "Fn::Sub":
            return self._sub(stack, argument)
        if function == "Fn::Select":
            index, items = argument
            return self._list(stack, items)[int(self.evaluate(stack, index))]
        if function == "Fn::Split":
            separator, text = argument
            return self._text(stack, text).split(_text(separator))
        if function == "Fn::ImportValue":
            name = self._text(stack, argument)
            if name not in self._exports:
                raise RehearsalError(f"{self.templates.stack_name(stack)} imports {name!r}, which no stack exports")
            exporter, expression = self._exports[name]
            return self.evaluate(exporter, expression)
        if function == "Fn::If":
            name, when_true, when_false = argument
            return self.evaluate(stack, when_true if self.condition(stack, name) else when_false)
        if function == "Condition":
            return self.condition(stack, argument)
        if function == "Fn::Equals":
            left, right = (self.evaluate(stack, a) for a in argument)
            return left == right
        if function == "Fn::Not":
            return not self.evaluate(stack, argument[0])
        if function == "Fn::And":
            return all(self.evaluate(stack, a) for a in argument)
        if function == "Fn::Or":
            return any(self.evaluate(stack, a) for a in argument)
        if function == "Fn::FindInMap":
            mapping, top, second = (self._text(stack, a) for a in argument)
            return self.templates.templates[stack]["Mappings"][mapping][top][second]
        if function == "Fn::Base64":
            return base64.b64encode(self._text(stack, argument).encode()).decode()
        if function == "Fn::GetAZs":
            return list(self.config.azs)
        if function == "Fn::ToJsonString":
            return json.dumps(self.evaluate(stack, argument), separators=(",", ":"))
        raise NotEmulated(f"{self.templates.stack_name(stack)}: intrinsic function {function} is not evaluated")

    def _ref_name(self, stack: str, name: str) -> Any:
        if name.startswith("AWS::"):
            pseudo = {
                "AWS::Region": self.region,
                "AWS::AccountId": self.account,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackName": self.templates.stack_name(stack),
                "AWS::StackId": self.stack_ids[stack],
                "AWS::NoValue": NO_VALUE,
            }
            if name not in pseudo:
                raise NotEmulated(f"pseudo parameter {name}")
            return pseudo[name]
        parameters = self.templates.templates[stack].get("Parameters") or {}
        if name in parameters:
            if "Default" not in parameters[name]:
                raise RehearsalError(f"{self.templates.stack_name(stack)}: parameter {name} has no default")
            if str(parameters[name].get("Type", "")).startswith("AWS::SSM::Parameter::Value"):
                raise NotEmulated(f"{self.templates.stack_name(stack)}: SSM parameter {name}")
            return parameters[name]["Default"]
        return self.ref(self.resource(stack, name))

    def _sub(self, stack: str, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument

        def replace(match: re.Match[str]) -> str:
            name = match[1]
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return _text(self.evaluate(stack, variables[name]))
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return _text(self.get_att(self.resource(stack, logical_id), attribute))
            return _text(self._ref_name(stack, name))

        return _SUB_VARIABLE.sub(replace, text)

    def _list(self, stack: str, value: Any) -> list[Any]:
        items = self.evaluate(stack, value)
        if not isinstance(items, list):
            raise RehearsalError(f"{self.templates.stack_name(stack)}: {value!r} is not a list")
        return items

    def _text(self, stack: str, value: Any) -> str:
        return _text(self.evaluate(stack, value))

    def _dynamic(self, value: Any) -> Any:
        """Dynamic references (`{{resolve:secretsmanager:...}}`), resolved in resource properties only."""
        if isinstance(value, list):
            return [self._dynamic(v) for v in value]
        if isinstance(value, dict):
            return {k: self._dynamic(v) for k, v in value.items()}
        if not isinstance(value, str) or "{{resolve:" not in value:
            return value
        return DYNAMIC_REFERENCE.sub(lambda m: self._resolve_reference(m["service"], m["reference"]), value)

    def _resolve_reference(self, service: str, reference: str) -> str:
        if service != "secretsmanager" or self.read_secret is None:
            raise NotEmulated(f"dynamic reference {{{{resolve:{service}:...}}}}")
        fields = reference.split(":")
        # The secret id is a name or a whole ARN, which has colons of its own (7 fields).
        secret_id, rest = (
            (":".join(fields[:7]), fields[7:]) if reference.startswith("arn:") else (fields[0], fields[1:])
        )
        rest += [""] * (4 - len(rest))
        _secret_string, json_key, stage, version = rest[:4]
        if stage or version:
            raise NotEmulated(f"dynamic reference to a version of {secret_id}")
        text = self.read_secret(secret_id)
        return _text(json.loads(text)[json_key]) if json_key else text


def _references(value: Any) -> Iterator[str]:
    """Logical ids an expression refers to (Ref, GetAtt, and `${...}` of Fn::Sub)."""
    if isinstance(value, list):
        for item in value:
            yield from _references(item)
    elif isinstance(value, dict):
        if len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Ref" and isinstance(argument, str) and not argument.startswith("AWS::"):
                yield argument
                return
            if function == "Fn::GetAtt":
                yield argument.split(".", 1)[0] if isinstance(argument, str) else argument[0]
                return
            if function == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                for name in _SUB_VARIABLE.findall(text):
                    if not name.startswith(("!", "AWS::")) and name not in variables:
                        yield name.split(".", 1)[0]
                yield from _references(variables)
                return
        for item in value.values():
            yield from _references(item)


def _imports(value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for item in value:
            yield from _imports(item)
    elif isinstance(value, dict):
        if set(value) == {"Fn::ImportValue"} and isinstance(value["Fn::ImportValue"], str):
            yield value["Fn::ImportValue"]
            return
        for item in value.values():
            yield from _imports(item)


def _topological(names: list[str], needs: dict[str, set[str]], *, what: str) -> list[str]:
    """`names` so that each comes after what it needs; declaration order breaks ties."""
    ordered: list[str] = []
    done: set[str] = set()
    pending = list(names)
    while pending:
        ready = [n for n in pending if needs.get(n, set()) <= done]
        if not ready:
            raise RehearsalError(f"circular dependency among the {what}: {sorted(pending)}")
        for name in ready:
            ordered.append(name)
            done.add(name)
        pending = [n for n in pending if n not in done]
    return ordered

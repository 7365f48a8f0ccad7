"""Templates and CEL expressions: compiled once when a workflow loads, evaluated per execution.

``compile_string`` turns a definition string holding ``{{ … }}`` into a ``Template``;
``compile_condition`` turns a ``when`` into a ``Condition``. Both check every name against a
``Scope`` and raise ``TemplateSyntaxError`` listing every problem with its offset.
"""

from maestro_gateway.expr.compiler import Scope
from maestro_gateway.expr.template import (
    Condition,
    Template,
    TemplateProblem,
    TemplateSyntaxError,
    compile_condition,
    compile_string,
    constant,
    mapping,
    sequence,
)
from maestro_gateway.expr.values import to_text

__all__ = [
    "Condition",
    "Scope",
    "Template",
    "TemplateProblem",
    "TemplateSyntaxError",
    "compile_condition",
    "compile_string",
    "constant",
    "mapping",
    "sequence",
    "to_text",
]

"""The code Jinja compiles a template to, with the sandbox's guards written in
(``render.sandbox.GuardedEnvironment`` holds the guards themselves).

- each loop's iterable becomes ``environment.guard_iter(...)`` and each list, tuple and dict
  literal ``environment.guard_value(...)``, so what a template builds and repeats is charged
  to the render's budget as it runs; ``a ~ b`` measures its parts first
  (``environment.guard_parts``);
- a value printed with autoescaping on is ``environment.guard_escaped(value)``: what Jinja
  writes as ``escape(environment.finalize(value))``, in one call, as it is made for every value
  a template prints (issue 20: a tenth of a 50 KB digest's render). Volatile and plain-text
  output is left to Jinja.

The guards are environment attributes, which no template can name.
"""

from __future__ import annotations

from typing import Any, cast

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.visitor import NodeTransformer


def _guard(kind: str, node: nodes.Node) -> nodes.Call:
    """``environment.guard_<kind>(node)``: an environment attribute, so no template can name it
    (the code generator below writes it as a direct call)."""
    argument = cast(nodes.Expr, node)
    return nodes.Call(
        nodes.EnvironmentAttribute(f"guard_{kind}"), [argument], [], None, None, lineno=node.lineno
    )


class _InsertGuards(NodeTransformer):
    """Wraps each loop's iterable and each literal the template builds in a guard."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        node.iter = _guard("iter", node.iter)
        return node

    def visit_List(self, node: nodes.List | nodes.Dict) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return _guard("value", node)

    visit_Dict = visit_List  # noqa: N815

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        return _guard("value", node) if node.ctx == "load" else node  # not a loop target


class GuardedCodeGenerator(CodeGenerator):
    """Jinja's code generator, writing the guards in (see the module docstring)."""

    def visit_Template(  # noqa: N802
        self, node: nodes.Template, frame: Frame | None = None
    ) -> None:
        super().visit_Template(_InsertGuards().visit(node), frame)

    def visit_Call(  # noqa: N802
        self, node: nodes.Call, frame: Frame, forward_caller: bool = False
    ) -> None:
        if isinstance(node.node, nodes.EnvironmentAttribute):  # only ever one of our guards
            self.write(f"environment.{node.node.name}(")
            self.visit(node.args[0], frame)
            self.write(")")
            return
        super().visit_Call(node, frame, forward_caller=forward_caller)

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if _escaped_here(frame):
            self.write("environment.guard_escaped(")
        else:
            super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        if _escaped_here(frame):
            self.write(")")
        else:
            super()._output_child_post(node, frame, finalize)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802
        """``a ~ b``: the parts are measured by ``environment.guard_parts`` before joining."""
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.guard_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


def _escaped_here(frame: Frame) -> bool:
    return bool(frame.eval_ctx.autoescape) and not frame.eval_ctx.volatile

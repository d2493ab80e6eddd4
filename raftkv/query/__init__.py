"""The query language: parse text into a checked AST, plan it against the shard map, and the
pure pieces the shards run (row filters, partial aggregates). See docs/query-language.md."""

from .aggregate import Aggregates
from .parser import parse, parse_script
from .planner import (
    DeletePlan,
    ExplainPlan,
    GetPlan,
    InsertPlan,
    Plan,
    SelectPlan,
    ShardScan,
    ShardWrite,
    ShowPlan,
    explain,
    plan,
)
from .predicate import compile_expr, compile_exprs, compile_filter, expr_to_wire, to_wire

__all__ = [
    "Aggregates", "DeletePlan", "ExplainPlan", "GetPlan", "InsertPlan", "Plan", "SelectPlan", "ShardScan",
    "ShardWrite", "ShowPlan", "compile_expr", "compile_exprs", "compile_filter", "explain", "expr_to_wire",
    "parse", "parse_script", "plan", "to_wire",
]

"""The query language: parse text into a checked AST, plan it against the shard map, and the
pure pieces the shards run (row filters, partial aggregates). See docs/query-language.md.

Names load on first use (PEP 562): a node process evaluates pushed-down filters through
``query.predicate`` and must not pay for -- or depend on -- the parser and its lark grammar.
"""

from __future__ import annotations

from .. import lazy

_WHERE = {
    "Aggregates": "aggregate",
    "parse": "parser", "parse_script": "parser",
    "ConstantPlan": "planner", "DeletePlan": "planner", "ExplainPlan": "planner", "GetPlan": "planner",
    "InsertPlan": "planner",
    "Plan": "planner", "SelectPlan": "planner", "ShardScan": "planner", "ShardWrite": "planner",
    "ShowPlan": "planner", "SplitPlan": "planner", "explain": "planner", "plan": "planner",
    "compile_expr": "predicate", "compile_exprs": "predicate", "compile_filter": "predicate",
    "compile_value": "predicate", "expr_to_wire": "predicate", "to_wire": "predicate",
    "Timestamp": "timestamps", "format_timestamp": "timestamps", "parse_timezone": "timestamps",
}

__all__ = sorted(_WHERE)


__getattr__ = lazy.exports(__name__, _WHERE, globals())

"""Just enough PromQL and exposition-format reading to check metric names.

``metric_names`` finds the metric names an expression selects: what is left once strings,
label matchers, ranges, grouping clauses, numbers and durations are removed, and function
calls and keywords are skipped. ``exported_names`` lists every series name an exposition can
give, including the suffixes of counters and histograms that have no sample yet.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "Inf", "NaN", "atan2"}
)

# What a family of each type can show as sample names (prometheus_client's text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "info": ("_info",),
}


def metric_names(expr: str) -> set[str]:
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?(?:\d+[a-z]+)+", " ", s)
    s = re.sub(r"(?<![\w:])\d+(?:\.\d*)?(?:e[+-]?\d+)?", " ", s, flags=re.I)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", s):
        if s[match.end() :].lstrip().startswith("(") or match[0] in KEYWORDS:
            continue
        names.add(match[0])
    return names


def exported_names(exposition: str) -> frozenset[str]:
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(s.name for s in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return frozenset(names)

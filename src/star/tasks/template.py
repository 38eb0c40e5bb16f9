"""`task.prompt_template`: a task's question text built from a row's columns.

Placeholders are Python format fields naming columns: `"Passage: {passage}\\nQuestion: {question}"`,
`{choices[text][0]}` indexes into a column's value, `{{` and `}}` are literal braces. The template
is checked when the task is built (ConfigError); a row it cannot be filled from is one DataError
naming the placeholder, the row and the columns the row has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from string import Formatter
from typing import Any

from star.errors import ConfigError, DataError

_SYNTAX_HINT = "write a placeholder as {column} (or {column[key]}), and a literal brace as {{ or }}"


def _root(field: str, text: str) -> str:
    """The column a format field names; a ConfigError for positional fields and attribute access."""
    root = re.match(r"[^.\[]*", field).group()  # str.format's field name: root, then [key] or .attr parts
    if not root or root.isdigit():
        raise ConfigError(f"task.prompt_template={text!r}: placeholder {{{field}}} does not name a column",
                          hint=_SYNTAX_HINT)
    if "." in re.sub(r"\[[^\]]*\]", "", field):
        raise ConfigError(f"task.prompt_template={text!r}: placeholder {{{field}}} reads an attribute",
                          hint=f"index the value instead, e.g. {{{root}[key]}}")
    return root


class PromptTemplate:
    """A checked template; `render(row, where)` fills it from one row (a dict of columns)."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            parsed = list(Formatter().parse(text))
        except ValueError as e:
            raise ConfigError(f"task.prompt_template={text!r} is not a valid template: {e}", hint=_SYNTAX_HINT) from None
        roots = [_root(field, text) for _, field, _, _ in parsed if field is not None]
        if not roots:
            raise ConfigError(f"task.prompt_template={text!r} has no {{column}} placeholder, so every prompt would be"
                              " the same", hint="name the row's columns, e.g. 'Question: {question}'")
        #: The columns the template reads, each once, in order of first use.
        self.fields: tuple[str, ...] = tuple(dict.fromkeys(roots))

    def render(self, row: Mapping[str, Any], where: str) -> str:
        """The template filled from `row`; `where` ('file:line' or 'file, row N') prefixes any error."""
        for name in self.fields:
            if name not in row:
                columns = ", ".join(sorted(map(str, row))) or "none"
                raise DataError(f"{where}: task.prompt_template placeholder {{{name}}} names a column this row does"
                                f" not have (columns: {columns})",
                                hint="fix the placeholder's spelling, or add the column to every row")
            if row[name] is None:
                raise DataError(f"{where}: column {name!r} is empty (null), and task.prompt_template uses it",
                                hint="fill it in, or remove the row")
        try:
            text = self.text.format_map(row)
        except (LookupError, TypeError, ValueError) as e:
            raise DataError(f"{where}: task.prompt_template cannot be filled from this row: {type(e).__name__}: {e}",
                            hint="check the placeholder's index or format against the row's value") from None
        if not text.strip():
            raise DataError(f"{where}: task.prompt_template gives an empty prompt for this row", hint="fill in the row")
        return text

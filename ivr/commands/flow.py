"""`flask --app wsgi flow show`: the phone tree, drawn from the declared flow (`ivr.callflow.draw`)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from ivr.callflow import draw
from ivr.config import ROOT

README = ROOT / "README.md"
BEGIN, END = "<!-- flow show: begin -->", "<!-- flow show: end -->"
BLOCK = re.compile(re.escape(BEGIN) + r"\n```text\n(.*?)```\n" + re.escape(END), re.S)

flow = AppGroup("flow", help="The phone tree as declared in ivr/callflow/flow.py.")


def readme_tree(readme: str) -> str | None:
    """Return the tree drawn in the README between the flow-show markers, or None without them."""
    found = BLOCK.search(readme)
    return found.group(1) if found else None


def with_tree(readme: str, tree: str) -> str:
    """Return the README with the tree between the flow-show markers replaced."""
    if readme_tree(readme) is None:
        raise ValueError(f"the README has no {BEGIN} … {END} block around a ```text fence")
    return BLOCK.sub(lambda _: f"{BEGIN}\n```text\n{tree}```\n{END}", readme, count=1)


@flow.command("show")
@click.option("--format", "fmt", type=click.Choice(sorted(draw.FORMATS)), default="text", show_default=True,
              help="text: an indented tree to read; mermaid: a flowchart TD; dot: a Graphviz digraph")
@click.option("--write-readme", is_flag=True, help="write the text tree into README.md's flow-show block")
def show(fmt: str, write_readme: bool) -> None:
    """Print the phone tree: menus and their keys, entries, actions and their outcomes, transfers."""
    machine = current_app.extensions["machine"]
    texts = current_app.extensions["catalogue"].texts
    if write_readme:
        path = Path(README)
        try:
            path.write_text(with_tree(path.read_text(encoding="utf-8"), draw.text(machine, texts)), encoding="utf-8")
        except ValueError as err:
            click.echo(f"{path}: {err}", err=True)
            sys.exit(1)
        click.echo(f"{path}: the tree is up to date")
        return
    click.echo(draw.FORMATS[fmt](machine, texts), nl=False)

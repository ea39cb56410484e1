"""The documentation keeps up with the code: every hook documented as specified."""

import inspect
import re

from osv import hookspecs


def _specified_hooks():
    """Each hook's heading as docs/hooks.md must show it: name(parameters)."""
    return {
        f"{name}({', '.join(inspect.signature(function).parameters)})"
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("osv_")
    }


def _documented_hooks(repo_root):
    text = (repo_root / "docs" / "hooks.md").read_text()
    return set(re.findall(r"^#{2,4} (osv_\w+\(.*\))\s*$", text, re.M))


def test_every_hook_is_documented_under_its_exact_signature(repo_root):
    missing = _specified_hooks() - _documented_hooks(repo_root)
    assert not missing, f"docs/hooks.md lacks a heading for {sorted(missing)}"


def test_the_docs_describe_no_hook_the_core_lacks(repo_root):
    stale = _documented_hooks(repo_root) - _specified_hooks()
    assert not stale, f"docs/hooks.md documents hooks that do not exist: {stale}"


def test_documented_parameters_are_the_specified_ones(repo_root):
    text = (repo_root / "docs" / "hooks.md").read_text()
    sections = re.split(r"^#{2,4} (?=osv_)", text, flags=re.M)[1:]
    for section in sections:
        heading, _, body = section.partition("\n")
        body = re.split(r"^#", body, maxsplit=1, flags=re.M)[0]
        parameters = re.findall(r"\w+", heading.partition("(")[2])
        listed = re.findall(r"^- `(\w+)`:", body, re.M)
        assert listed == parameters, f"{heading}: parameters listed as {listed}"

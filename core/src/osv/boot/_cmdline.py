"""The application command line: commands, their terminators, $VAR and runscript.

The grammar is OSv's ``osv::parse_command_line``, so an OSv command line such
as ``--env=A=1 /tools/a.so x; /b.so "y z" &!`` means the same here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping

from osv._record import Record

from ._errors import CommandLineError

logger = logging.getLogger(__name__)

# Grammar, as OSv's Boost.Spirit parser defines it:
#
#   line       := command (space* command)*
#   command    := word (space* word)* space* terminator
#   terminator := ";" | "&!" | "&" | "!" | end of input
#   word       := quoted | bare
#   quoted     := '"' (escape | any character but '"')* '"'
#   bare       := (escape | any character but ' ', ';', '&', '!')+
#   escape     := one of \a \b \f \n \r \t \v \\ \' \"  (decoded)
#
# Quirks kept on purpose, because OSv command lines rely on or produce them:
# between words any C-locale whitespace is skipped, yet inside a bare word
# only the space character ends it (a tab is part of the word); a backslash
# before any other character is an ordinary character; a '"' without a
# closing quote is not an error but the start of a bare word; and a quoted
# word may be glued to the next word ('"a"b' is two words).
_SPACE = " \t\n\v\f\r"
_BARE_END = " ;&!"
_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}
_TERMINATORS = (";", "&!", "&", "!")

RUNSCRIPT = "runscript"
_ENV_OPTION = "--env="

ReadFile = Callable[[str], "str | bytes"]


class Command(Record):
    """One command: its argument vector and what ended it.

    ``terminator`` is ";" or "" (run and wait), "&" (run in the background),
    "&!" (a detached background command stopped once the foreground ones are
    done) or "!" (run, then stop every other application thread).
    """

    __slots__ = ("argv", "terminator")

    def __init__(self, argv: list[str], terminator: str) -> None:
        self.argv = argv
        self.terminator = terminator


def parse_command_line(
    text: str, env: MutableMapping[str, str], *, read_file: ReadFile | None = None
) -> list[Command]:
    """Parse an application command line into commands, as OSv does.

    Each word's first "$" starts a variable name that runs to the word's end;
    it is replaced by that variable's value from *env* (empty when unset).
    ``runscript FILE`` is replaced by the commands in FILE, read with
    *read_file*; leading ``--env=KEY=VALUE`` (or ``KEY?=VALUE``, set only
    when unset) words of its commands update *env* in place.

    Raises ``CommandLineError`` when the line or a script cannot be parsed.
    """
    # OSv expands the variables of the whole line first, then the scripts in
    # order, so a script's --env reaches later scripts but not this line.
    parsed = [
        Command([_expand(word, env) for word in command.argv], command.terminator)
        for command in _parse(text)
    ]

    commands: list[Command] = []
    for command in parsed:
        if command.argv[0] == RUNSCRIPT:
            commands.extend(_run_script(command.argv, env, read_file))
        else:
            commands.append(command)
    return commands


def quote_word(word: str) -> str:
    """``word`` written so that the parser reads it back as that one word.

    A word the grammar reads as it is stays bare; any other is quoted, with
    the grammar's escapes for '"', backslash and control characters. A "$"
    would start a variable wherever it stands, and no escape stops it, so a
    word holding one cannot be written: CommandLineError.
    """
    if "$" in word:
        raise CommandLineError(
            f"{word!r} holds a '$', which an OSv command line always reads as "
            "a variable"
        )
    special = _BARE_END + _SPACE + '"\\'
    if word and not any(char in special for char in word) and word.isprintable():
        return word
    escapes = {value: f"\\{key}" for key, value in _ESCAPES.items() if key != "'"}
    return '"' + "".join(escapes.get(char, char) for char in word) + '"'


def _parse(line: str) -> list[Command]:
    """Split *line* into commands without expanding anything."""
    if all(character in _SPACE or character == ";" for character in line):
        return []

    commands: list[Command] = []
    position, end = 0, len(line)
    while True:
        argv: list[str] = []
        position = _skip_space(line, position)
        while position < end and line[position] not in ";&!":
            word, position = _word(line, position)
            argv.append(word)
            position = _skip_space(line, position)

        if not argv:
            # OSv stops at the first place no command can start and ignores
            # the rest of the line, silently dropping commands after "a;;b".
            # We accept only a harmless remainder (";" and blanks) and refuse
            # the rest, so no command is ever lost without a word.
            if commands and all(c in _SPACE or c == ";" for c in line[position:]):
                return commands
            raise CommandLineError(
                f"expected a command at position {position} of {line!r}"
            )

        terminator = next((t for t in _TERMINATORS if line.startswith(t, position)), "")
        position += len(terminator)
        commands.append(Command(argv, terminator))
        if position >= end or _skip_space(line, position) == end:
            return commands


def _skip_space(line: str, position: int) -> int:
    while position < len(line) and line[position] in _SPACE:
        position += 1
    return position


def _word(line: str, position: int) -> tuple[str, int]:
    """Read the word starting at *position*; return it and the position after it."""
    if line[position] == '"':
        word, after = _decode(line, position + 1, stop='"')
        if after < len(line):
            return word, after + 1  # past the closing quote
        # No closing quote: the '"' is an ordinary character of a bare word.
    return _decode(line, position, stop=_BARE_END)


def _decode(line: str, position: int, stop: str) -> tuple[str, int]:
    characters: list[str] = []
    end = len(line)
    while position < end and line[position] not in stop:
        if (
            line[position] == "\\"
            and position + 1 < end
            and line[position + 1] in _ESCAPES
        ):
            characters.append(_ESCAPES[line[position + 1]])
            position += 2
        else:
            characters.append(line[position])
            position += 1
    return "".join(characters), position


def _expand(word: str, env: MutableMapping[str, str]) -> str:
    """Replace everything after the word's first "$" by that variable's value."""
    prefix, dollar, name = word.partition("$")
    if not dollar:
        return word
    return prefix + env.get(name, "")


def _run_script(
    argv: list[str], env: MutableMapping[str, str], read_file: ReadFile | None
) -> list[Command]:
    """The commands of ``runscript FILE``, one line of FILE at a time."""
    if len(argv) != 2:
        raise CommandLineError(
            f"runscript takes exactly one argument, the script file; got {argv[1:]!r}"
        )
    path = argv[1]
    if read_file is None:
        raise CommandLineError(f"runscript {path}: no file reader was given")
    try:
        content = read_file(path)
    except OSError as error:
        raise CommandLineError(
            f"Failed to open runscript file '{path}': {error}"
        ) from None
    if isinstance(content, bytes):
        try:
            content = content.decode()
        except UnicodeDecodeError:
            raise CommandLineError(
                f"runscript file '{path}' is not UTF-8 text"
            ) from None

    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline ending the last line starts no new line

    commands: list[Command] = []
    for number, line in enumerate(lines, 1):
        where = f"runscript file '{path}' line {number}"
        try:
            parsed = _parse(line)
        except CommandLineError as error:
            raise CommandLineError(f"{where}: {error}") from None

        # All of a line's options apply before any of its words is expanded,
        # so "--env=PORT?=80 /srv.so $PORT" passes the final PORT.
        parsed = [
            Command(_apply_env_options(command.argv, env, where), command.terminator)
            for command in parsed
        ]
        for command in parsed:
            argv = [_expand(word, env) for word in command.argv]
            if not argv:
                # A command made only of --env options sets variables and
                # runs nothing.
                continue
            if argv[0] == RUNSCRIPT:
                raise CommandLineError(f"{where}: runscript cannot be nested")
            commands.append(Command(argv, command.terminator))
    logger.debug("runscript %s: %d commands", path, len(commands))
    return commands


def _apply_env_options(
    argv: list[str], env: MutableMapping[str, str], where: str
) -> list[str]:
    """Apply and remove a script command's leading ``--env=`` words."""
    count = 0
    for word in argv:
        if not word.startswith("-"):
            break
        count += 1
        if not word.startswith(_ENV_OPTION):
            raise CommandLineError(f"{where}: unrecognised option '{word}'")

        # "KEY?=VALUE" is looked for first, as OSv does, so in "A=b?=c" the
        # key is "A=b".
        setting = word[len(_ENV_OPTION) :]
        key, conditional, value = setting.partition("?=")
        if conditional:
            if key in env:
                continue
        else:
            key, equals, value = setting.partition("=")
            if not equals:
                raise CommandLineError(
                    f"{where}: expected 'KEY=VALUE' or 'KEY?=VALUE', got '{word}'"
                )
        if key:
            env[key] = _expand(value, env)
            logger.debug("%s: setting %s=%s", where, key, env[key])
    return argv[count:]

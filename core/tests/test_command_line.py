"""The application command line: OSv's grammar, $VAR expansion and runscript."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osv.boot import Command, CommandLineError, parse_command_line, quote_word


def parse(text, env=None, files=None):
    files = files or {}

    def read_file(path):
        try:
            return files[path]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", path) from None

    return [
        (c.argv, c.terminator)
        for c in parse_command_line(
            text, {} if env is None else env, read_file=read_file
        )
    ]


# ---------------------------------------------------------------------------
# Grammar
# ---------------------------------------------------------------------------


def test_single_command_ends_with_an_empty_terminator():
    assert parse("/hello a b") == [(["/hello", "a", "b"], "")]


def test_result_is_a_list_of_commands():
    (command,) = parse_command_line("/hello", {})

    assert command == Command(["/hello"], "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/a; /b", [(["/a"], ";"), (["/b"], "")]),
        ("/a;/b;", [(["/a"], ";"), (["/b"], ";")]),
        ("/a & /b", [(["/a"], "&"), (["/b"], "")]),
        ("/a &! /b", [(["/a"], "&!"), (["/b"], "")]),
        ("/a&!/b", [(["/a"], "&!"), (["/b"], "")]),
        ("/a ! /b", [(["/a"], "!"), (["/b"], "")]),
        ("/a x!/b y", [(["/a", "x"], "!"), (["/b", "y"], "")]),
        ("/srv.so &!  /app.so ;  ", [(["/srv.so"], "&!"), (["/app.so"], ";")]),
    ],
)
def test_terminators_end_commands(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text", ["", "   ", ";", " ; ;; ", "\t\n\r\f\v;"])
def test_line_of_only_blanks_and_semicolons_has_no_commands(text):
    assert parse(text) == []


def test_words_are_separated_by_any_whitespace():
    assert parse("  /a \t\n b  ") == [(["/a", "b"], "")]


def test_a_tab_inside_a_bare_word_belongs_to_it():
    # OSv's bare word ends only at a space; other whitespace is only skipped
    # between words.
    assert parse("/a x\ty") == [(["/a", "x\ty"], "")]


def test_double_quoted_word_keeps_spaces_and_terminators():
    assert parse('/echo "a b; c & d!" e') == [(["/echo", "a b; c & d!", "e"], "")]


def test_empty_quoted_word_is_an_empty_argument():
    assert parse('/echo ""') == [(["/echo", ""], "")]


def test_single_quotes_do_not_quote():
    assert parse("/echo 'a b'") == [(["/echo", "'a", "b'"], "")]


def test_escapes_are_decoded_in_bare_and_quoted_words():
    text = r'/echo a\tb "c\"d\\e\nf" \a\b\f\r\v\'\"'

    assert parse(text) == [(["/echo", "a\tb", 'c"d\\e\nf', "\a\b\f\r\v'\""], "")]


def test_backslash_before_another_character_stays():
    assert parse(r"/echo a\qb \x") == [(["/echo", r"a\qb", r"\x"], "")]


def test_backslash_does_not_escape_a_terminator():
    assert parse(r"/a x\;/b") == [(["/a", "x\\"], ";"), (["/b"], "")]


def test_quote_inside_a_bare_word_is_an_ordinary_character():
    assert parse('/a b"c d"') == [(["/a", 'b"c', 'd"'], "")]


def test_quoted_word_may_be_followed_directly_by_another_word():
    assert parse('/a "b"c') == [(["/a", "b", "c"], "")]


def test_unterminated_quote_starts_a_bare_word():
    assert parse('/a "b c') == [(["/a", '"b', "c"], "")]


@pytest.mark.parametrize("text", ["; /a", "&", "!", "&! /a", " ;& /a"])
def test_line_not_starting_with_a_command_is_an_error(text):
    with pytest.raises(CommandLineError, match="expected a command"):
        parse(text)


@pytest.mark.parametrize("text", ["/a;;/b", "/a & & /b", "/a ! ;/b", "/a &&"])
def test_commands_are_never_dropped_silently(text):
    # OSv stops parsing at the first empty command and drops what follows.
    with pytest.raises(CommandLineError, match="expected a command"):
        parse(text)


def test_trailing_semicolons_after_the_last_command_are_harmless():
    assert parse("/a; ; ;") == [(["/a"], ";")]


# ---------------------------------------------------------------------------
# $VAR expansion
# ---------------------------------------------------------------------------


def test_everything_after_the_first_dollar_is_a_variable_name():
    env = {"AA": "aa", "PORT": "8000"}

    assert parse("/srv $PORT X$AA $AA/x", env) == [(["/srv", "8000", "Xaa", ""], "")]


def test_unset_variable_expands_to_nothing():
    assert parse("/a $NOPE pre$NOPE") == [(["/a", "", "pre"], "")]


def test_only_the_first_dollar_counts():
    env = {"A$B": "ab", "A": "a"}

    assert parse("/a x$A$B ${A}", env) == [(["/a", "xab", ""], "")]


def test_expansion_applies_inside_quotes_and_to_the_program():
    env = {"PROG": "/bin/app", "MSG": "hi there"}

    assert parse('$PROG "$MSG"', env) == [(["/bin/app", "hi there"], "")]


# ---------------------------------------------------------------------------
# runscript
# ---------------------------------------------------------------------------


def test_runscript_is_replaced_by_the_scripts_commands():
    files = {"/run/default": "/a x; /b &\n/c\n"}

    assert parse("/first; runscript /run/default; /last", files=files) == [
        (["/first"], ";"),
        (["/a", "x"], ";"),
        (["/b"], "&"),
        (["/c"], ""),
        (["/last"], ""),
    ]


def test_runscript_env_options_set_variables_and_are_removed():
    env = {}
    files = {"/run/x": "--env=PORT=8000 --env=HOST=h /srv.so $PORT $HOST\n"}

    assert parse("runscript /run/x", env, files) == [(["/srv.so", "8000", "h"], "")]
    assert env == {"PORT": "8000", "HOST": "h"}


def test_runscript_conditional_env_sets_only_unset_variables():
    env = {"PORT": "9000"}
    files = {"/run/x": "--env=PORT?=1111 --env=MODE?=fast /srv.so $PORT $MODE"}

    assert parse("runscript /run/x", env, files) == [(["/srv.so", "9000", "fast"], "")]
    assert env == {"PORT": "9000", "MODE": "fast"}


def test_runscript_env_values_are_expanded():
    env = {"BASE": "/opt"}
    files = {"/run/x": "--env=DIR=$BASE /srv.so $DIR"}

    assert parse("runscript /run/x", env, files) == [(["/srv.so", "/opt"], "")]


def test_runscript_conditional_form_is_found_before_the_plain_one():
    # As in OSv, "?=" is looked for first, so the key here is "A=b".
    env = {}
    parse("runscript /s", env, {"/s": "--env=A=b?=c /x"})

    assert env == {"A=b": "c"}


def test_runscript_options_of_a_line_apply_before_its_words_expand():
    env = {}
    files = {"/s": "/a $X; --env=X=1 /b $X"}

    assert parse("runscript /s", env, files) == [(["/a", "1"], ";"), (["/b", "1"], "")]


def test_main_line_is_expanded_before_any_script_runs():
    env = {}
    files = {"/s": "--env=X=set /a $X"}

    assert parse("/before $X; runscript /s; /after $X", env, files) == [
        (["/before", ""], ";"),
        (["/a", "set"], ""),  # the script's line ended; runscript's ";" is gone
        (["/after", ""], ""),
    ]


def test_runscript_file_name_may_come_from_a_variable():
    files = {"/run/web": "/web.so"}

    assert parse("runscript $CONF", {"CONF": "/run/web"}, files) == [(["/web.so"], "")]


def test_env_only_script_line_runs_nothing():
    env = {}

    assert parse("runscript /s", env, {"/s": "--env=A=1\n/x"}) == [(["/x"], "")]
    assert env == {"A": "1"}


def test_script_blank_lines_and_missing_final_newline_are_fine():
    files = {"/s": "\n  \n;\n/a\n\n/b"}

    assert parse("runscript /s", files=files) == [(["/a"], ""), (["/b"], "")]


def test_script_file_may_be_bytes():
    assert parse("runscript /s", files={"/s": b"/a b\n"}) == [(["/a", "b"], "")]


@pytest.mark.parametrize(
    ("text", "files", "complaint"),
    [
        ("runscript", {}, "exactly one argument"),
        ("runscript /a /b", {}, "exactly one argument"),
        ("runscript /missing", {}, "Failed to open runscript file '/missing'"),
        (
            "runscript /s",
            {"/s": "--verbose /x"},
            "line 1: unrecognised option '--verbose'",
        ),
        (
            "runscript /s",
            {"/s": "/ok\n--env=NOEQUALS /x"},
            "line 2: expected 'KEY=VALUE'",
        ),
        ("runscript /s", {"/s": "/ok\n; /x"}, "line 2: expected a command"),
        ("runscript /s", {"/s": "runscript /t"}, "cannot be nested"),
        ("runscript /s", {"/s": b"\xff"}, "not UTF-8"),
    ],
)
def test_runscript_problem_is_a_command_line_error(text, files, complaint):
    with pytest.raises(CommandLineError, match=complaint):
        parse(text, files=files)


def test_runscript_without_a_file_reader_is_an_error():
    with pytest.raises(CommandLineError, match="no file reader"):
        parse_command_line("runscript /s", {})


# ---------------------------------------------------------------------------
# Writing a word (osv build's default command line)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "word",
    [
        "/usr/bin/python3",
        "/tmp/odd dir/my echo",
        'a&b!"x;y',
        "back\\slash",
        "tab\there",
        "new\nline",
        '"starts quoted',
        "",
    ],
)
def test_a_quoted_word_reads_back_as_itself(word):
    assert parse(quote_word(word) + " next") == [([word, "next"], "")]


def test_plain_words_stay_bare():
    assert quote_word("/usr/bin/python3.11") == "/usr/bin/python3.11"


def test_a_word_with_a_dollar_cannot_be_written():
    with pytest.raises(CommandLineError, match=r"\$"):
        quote_word("/opt/a$b")


@given(st.text(alphabet=st.characters(blacklist_characters="$\0"), max_size=40))
def test_any_word_without_a_dollar_reads_back_as_itself(word):
    assert parse(quote_word(word)) == [([word], "")]

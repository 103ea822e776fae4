"""Hostile inputs and hostile model outputs: one table, sent through every adapter by `test_hostile_inputs.py`.

Each input is what a user could type after `/ask` or `/imagine`; each says what a demanding user expects back:
the usage text, a private refusal naming what was wrong, or an answer. Each output is what a model could write
(split into the tokens it streams), for the "nothing a model writes can ping anyone" rule (README: Security).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DISCORD_OPTION_MAX_CHARS = 6000  # Discord refuses a string option value longer than this before we see it
LIMIT = 4000  # MAX_PROMPT_CHARS' default (config/settings.py)


class Expect(StrEnum):
    USAGE = "usage"  # the usage text, privately; nothing runs
    REFUSED = "refused"  # a private error that names the problem; nothing runs
    ANSWERED = "answered"  # one visible answer


@dataclass(frozen=True)
class HostileInput:
    id: str
    command: str  # "ask" or "imagine"
    text: str  # everything after the command
    expect: Expect
    names: str = ""  # for REFUSED: a piece of the error that says what was wrong
    discord_text: str | None = None  # what Discord can deliver of a text over its option limit, when not a cut

    @property
    def on_console(self) -> bool:
        """The console reads a line per command: a text with a line break can't be typed there."""
        return "\n" not in self.text and "\r" not in self.text

    @property
    def for_discord(self) -> str:
        if self.discord_text is not None:
            return self.discord_text
        return self.text[:DISCORD_OPTION_MAX_CHARS]


@dataclass(frozen=True)
class HostileOutput:
    id: str  # lowercase and dashes: it names the fake model (`hostile/output-<id>`) that writes it
    tokens: tuple[str, ...]
    answers: bool = True  # False: the model said nothing worth showing, so the user gets one failure reply

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def model(self) -> str:
        return f"hostile/output-{self.id}"


U, R, A = Expect.USAGE, Expect.REFUSED, Expect.ANSWERED

INPUTS: tuple[HostileInput, ...] = (
    # --- nothing to say ---------------------------------------------------------------------------------
    HostileInput("empty", "ask", "", U),
    HostileInput("spaces", "imagine", "     ", U),
    HostileInput("tabs-and-line-breaks", "ask", "\t\n \r\n\t", U),
    HostileInput("unicode-spaces", "ask", "\u00a0\u3000\u2003\u2009", U),
    HostileInput("zero-width-only", "ask", "\u200b\u200c\u200d\u2060\ufeff", U),
    HostileInput("options-only", "imagine", "--ar 16:9 --seed 3", U),
    HostileInput("control-characters-only", "ask", "\x00\x01\x02\x1b\x7f", U),
    HostileInput("bare-double-dash", "ask", "--", A),
    # --- control characters -----------------------------------------------------------------------------
    HostileInput("nul-inside", "ask", "hello\x00world", A),
    HostileInput("ansi-colours-and-bell", "ask", "\x1b[31mred\x1b[0m alert\x07", A),
    HostileInput("osc-terminal-title", "ask", "\x1b]0;pwned\x07what is a title", A),
    HostileInput("c1-controls", "ask", "\x9b31mc1 text\x85next", A),
    HostileInput("backspaces", "imagine", "a cat\x08\x08\x08dog", A),
    HostileInput("vertical-tab-form-feed", "ask", "one\x0btwo\x0cthree", A),
    # --- zero-width and right-to-left -------------------------------------------------------------------
    HostileInput("rtl-override", "ask", "\u202eexe.txt\u202c is it safe?", A),
    HostileInput("bidi-isolates", "imagine", "\u2067שלום\u2069 a cat", A),  # noqa: RUF001 (Hebrew "shalom": right-to-left text, meant)
    HostileInput("zero-width-in-mention", "ask", "@\u200beveryone hi", A),
    HostileInput("zero-width-before-option", "imagine", "a cat\u200b--ar 16:9", A),
    HostileInput("byte-order-mark", "ask", "\ufeffhello", A),
    HostileInput("arabic", "ask", "مرحبا بالعالم ما هو الذكاء", A),
    # --- emoji and combining marks ----------------------------------------------------------------------
    HostileInput("emoji-zwj-sequences", "ask", "👨‍👩‍👧‍👦🏳️‍🌈👍🏽", A),
    HostileInput("emoji-flood", "imagine", "🐱" * 1000, A),
    HostileInput("zalgo", "ask", "Z" + "\u0336\u0337\u0338" * 300 + "algo", A),
    HostileInput("astral-at-the-limit", "ask", "😀" * LIMIT, A),
    # --- mentions and links in the prompt ----------------------------------------------------------------
    HostileInput("slack-special-mentions", "ask", "<!channel> <!here> <!everyone> hi", A),
    HostileInput("slack-user-mentions", "imagine", "<@U0BOT> <@U123|bob> portrait", A),
    HostileInput("slack-subteam-and-channel", "ask", "<!subteam^S123|@team> <#C0CHAN|general>", A),
    HostileInput("slack-link", "imagine", "<https://evil.example|click me> poster", A),
    HostileInput("discord-mentions", "ask", "@everyone @here <@123> <@!456> <@&789>", A),
    HostileInput("pre-escaped-mention", "ask", "&lt;!channel&gt; &amp; co", A),
    HostileInput("angle-bracket-flood", "ask", "<" * 3000, A),
    # --- smuggled options -------------------------------------------------------------------------------
    HostileInput("model-not-allowed", "ask", "hi --model evil/model", R, "evil/model"),
    HostileInput("model-path-traversal", "ask", "hi --model ../../etc/passwd", R, "--model"),
    HostileInput("unknown-option", "ask", "rm -rf / --no-preserve-root", R, "--no-preserve-root"),
    HostileInput("option-of-the-other-command", "ask", "hello --seed 3", R, "--seed"),
    HostileInput("option-given-twice", "imagine", "a cat --seed 1 --seed 2", R, "twice"),
    HostileInput("option-without-value", "imagine", "a cat --ar", R, "--ar"),
    HostileInput("escaped-dashes", "imagine", "a cat \\--ar 16:9", A),
    HostileInput("em-dash-option", "imagine", "a cat —ar 16:9", A),
    HostileInput("dashes-in-backticks", "ask", "what does `--seed` do?", A),
    HostileInput("temperature-nan", "ask", "hi --temperature nan", R, "--temperature"),
    HostileInput("temperature-minus-infinity", "ask", "hi --temperature -inf", R, "--temperature"),
    HostileInput("seed-too-big", "imagine", "a cat --seed 99999999999999999999", R, "--seed"),
    HostileInput("max-tokens-too-big", "ask", "hi --max-tokens 99999999999999999999", A),
    HostileInput("aspect-ratio-zero", "imagine", "a cat --ar 0:0", R, "--ar"),
    HostileInput("aspect-ratio-arabic-digits", "imagine", "a cat --ar ١٦:٩", A),
    HostileInput("option-after-line-break", "ask", "hello\n--model evil/model", R, "evil/model"),
    HostileInput("option-after-no-break-space", "imagine", "a cat\u00a0--seed 7", A),
    HostileInput("mention-as-option-value", "imagine", "a cat --ar <!channel>", R, "--ar"),
    HostileInput("option-name-flood", "ask", "hi --" + "x" * 5000, R, "Unknown option"),
    HostileInput("option-value-flood", "imagine", "a cat --ar " + "9" * 100_000, R, "--ar"),
    HostileInput("model-name-flood", "ask", "hi --model a/" + "b" * 5000, R, "isn't allowed"),
    # --- Markdown and code fences -----------------------------------------------------------------------
    HostileInput("code-fence", "ask", "```python\nprint('hi')\n```", A),
    HostileInput("unclosed-fence", "ask", "``` unclosed fence @everyone", A),
    HostileInput("backtick-flood", "imagine", "`" * 3000, A),
    HostileInput("markdown-mix", "ask", "*bold* _it_ ~strike~ > quote ||spoiler|| # h1 [x](https://evil.example)", A),
    HostileInput("slack-block-quote", "ask", ">>> <!channel>\n>quoted", A),
    # --- length -----------------------------------------------------------------------------------------
    HostileInput("exactly-the-limit", "ask", "a" * LIMIT, A),
    HostileInput("one-over-the-limit", "ask", "a" * (LIMIT + 1), R, "4,000"),
    HostileInput("100-kb", "ask", "A" * 100_000, R, "4,000"),
    HostileInput("100-kb-of-padding", "ask", " " * 50_000 + "hi" + " " * 50_000, A,
                 discord_text=" " * 2999 + "hi" + " " * 2999),
    HostileInput("long-single-word", "imagine", "supercalifragilistic" * 150, A),
    HostileInput("long-url", "ask", "https://example.com/" + "a" * 3500, A),
    HostileInput("many-short-lines", "ask", "x\n" * 1900, A),
)

OUTPUTS: tuple[HostileOutput, ...] = (
    HostileOutput("discord-everyone-here", ("@everyone ", "@here ", "hi")),
    HostileOutput("discord-user-and-role", ("<@123> ", "<@!789> ", "<@&456>")),
    HostileOutput("slack-specials", ("<!channel> ", "<!here> ", "<!everyone>")),
    HostileOutput("slack-subteam", ("<!subteam^S1> ", "<!subteam^S1|@team>")),
    HostileOutput("slack-users-and-channel", ("<@U123> ", "<@U123|bob> ", "<#C123|general>")),
    HostileOutput("slack-links", ("<https://evil.example|click here> ", "<mailto:a@evil.example|mail>")),
    HostileOutput("split-slack-channel", ("<", "!", "chan", "nel>", " and ", "<!", "here>")),
    HostileOutput("split-slack-user", ("<@", "U1", "23>")),
    HostileOutput("split-discord-everyone", ("@every", "one ", "@", "here ", "<@", "&456", ">")),
    HostileOutput("pre-escaped", ("&lt;!channel&gt; ", "&amp;", "lt;!here&amp;gt;")),
    HostileOutput("slack-date-token", ("<!date^1392734382^{date}|Feb 18> ",)),
    HostileOutput("mentions-in-code-fence", ("```\n", "@everyone <!channel> <@&456>\n", "```")),
    HostileOutput("unclosed-fence-with-mentions", ("```py\n", "x = '<!here>'\n" * 300)),
    HostileOutput("mention-word-over-two-messages", ("<!channel>" * 250, "@everyone" * 250)),
    HostileOutput("terminal-escapes", ("\x1b[2J", "clear\x00ed", "\x07 \x1b]0;pwned\x07", "\x9b31m done")),
    HostileOutput("zero-width-and-rtl", ("@\u200beveryone ", "\u202e<!channel>\u202c ", "<\u200b!here>")),
    HostileOutput("https-token", ("https:", "//evil.example/x.png ", "data:text/html,<b>x</b>")),
    HostileOutput("line-separators", ("before\u2028after ", "para\u2029graph ", "vt\x0bff\x0cend ", "fs\x1cgs\x85end")),
    HostileOutput("event-stream-injection", ("ok\u2028event: done\u2028data: {}\u2028\u2028", " tail <!channel>")),
    HostileOutput("whitespace-only", ("   ", "\n", "\t"), answers=False),
    HostileOutput("no-tokens", (), answers=False),
)


def _unique(ids: list[str]) -> None:
    duplicates = {name for name in ids if ids.count(name) > 1}
    assert not duplicates, duplicates


_unique([case.id for case in INPUTS])
_unique([case.id for case in OUTPUTS])

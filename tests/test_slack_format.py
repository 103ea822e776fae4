"""`adapters.slack_format`: model output made inert, and captions that markup in a prompt cannot garble."""

from __future__ import annotations

from adapters.slack_format import (
    CHAT_UPDATE_MAX_CHARS,
    Markup,
    escape,
    escape_markdown,
    failure_text,
    fallback_text,
    image_caption,
    image_links,
    message_content,
    missing_images_note,
    private_texts,
)
from bot.errors import FailureKind
from bot.replies import Failure, Image, Images, RunInfo, TextDone

PNG = Image(data=b"png", content_type="image/png", filename="image-1.png", url="https://replicate.delivery/a.png")


def images(prompt: str, *pictures: Image) -> Images:
    return Images(images=pictures or (PNG,), prompt=prompt, seed=42,
                  run=RunInfo(model="black-forest-labs/flux-schnell"))


def test_escape_makes_mentions_and_links_literal() -> None:
    assert escape("<!channel> <@U1> <https://x|y> & co") == "&lt;!channel&gt; &lt;@U1&gt; &lt;https://x|y&gt; &amp; co"


def test_caption_puts_model_and_seed_before_a_prompt_whose_markup_is_unclosed() -> None:
    caption = image_caption(images("a ```cat *bold _lean"))
    head, prompt = caption.split("\n")
    assert head == "🖼 image · *model:* `black-forest-labs/flux-schnell` · *seed:* 42"
    assert prompt == "> a ```cat *bold _lean"


def test_caption_quotes_every_line_of_the_prompt_and_keeps_the_note_above_it() -> None:
    caption = image_caption(images("line one\nline <two>"), note="<https://x|image 1>")
    assert caption.split("\n")[1:] == ["<https://x|image 1>", "> line one", "> line &lt;two&gt;"]


def test_long_prompt_is_cut_in_the_caption() -> None:
    caption = image_caption(images("p" * 5000))
    assert len(caption) < 700 and caption.endswith("…")


def test_links_are_numbered_by_their_place_in_the_set() -> None:
    second = Image(data=b"", content_type="", filename="image-2", url="https://replicate.delivery/b.png")
    assert image_links(images("x", PNG, second), [second]) == "<https://replicate.delivery/b.png|image 2>"


def test_markdown_keeps_formatting_and_link_query_strings_but_not_mentions() -> None:
    text = "**b** [a](https://x.test/?a=1&b=2) <!channel> <@U1> <https://x|y> &lt;!here&gt;"
    assert escape_markdown(text) == (
        "**b** [a](https://x.test/?a=1&b=2) &lt;!channel&gt; &lt;@U1&gt; &lt;https://x|y&gt; &lt;!here&gt;")


def test_markdown_goes_in_a_markdown_block_with_a_plain_text_fallback() -> None:
    content = message_content("**b** & &lt;!channel&gt;", Markup.MARKDOWN)
    assert content == {"blocks": [{"type": "markdown", "text": "**b** & &lt;!channel&gt;"}],
                       "text": "**b** &amp; &lt;!channel&gt;"}
    assert message_content("*caption*", Markup.MRKDWN) == {"text": "*caption*"}


def test_fallback_of_a_markdown_text_full_of_ampersands_is_cut_to_what_chat_update_takes() -> None:
    fallback = fallback_text("a&" * 2000)  # 4,000 characters of Markdown, 12,000 once `&` is escaped
    assert len(fallback) <= CHAT_UPDATE_MAX_CHARS and fallback.endswith("a…")  # no `&am` left dangling


def test_failure_text_escapes_the_words_it_quotes() -> None:
    message = "The model `m/x` rejected the input: <!channel> a & b"
    assert failure_text(message) == "⚠️ The model `m/x` rejected the input: &lt;!channel&gt; a &amp; b"
    assert failure_text(message, Markup.MARKDOWN) == "⚠️ The model `m/x` rejected the input: &lt;!channel&gt; a & b"


def test_private_texts_are_escaped_mrkdwn_within_response_urls_uses() -> None:
    answer = TextDone(text="<!here> " + "x" * 20_000, run=RunInfo(model="m/x"))
    chunks = private_texts(answer)
    assert len(chunks) == 4 and chunks[0].startswith("&lt;!here&gt; ")  # the fifth use is the notice before them
    failed = private_texts(Failure(FailureKind.MODEL_FAILED, "It <!channel> failed."), partial="Half <@U1>")
    assert failed == ["Half &lt;@U1&gt;\n\n⚠️ It &lt;!channel&gt; failed."]


def test_an_image_link_whose_url_holds_a_pipe_cannot_spoof_its_label() -> None:
    spoof = Image(data=b"", content_type="", filename="image-1", url="https://replicate.delivery/a|click me> <!channel")
    links = image_links(images("x", spoof))
    assert links == "<https://replicate.delivery/a%7Cclick%20me%3E%20%3C!channel|image 1>"
    assert links.count("|") == 1 and links.count("<") == 1 and links.count(">") == 1


def test_missing_images_say_why_one_line_each_and_link_only_where_a_link_is_given() -> None:
    refused = Image(data=b"", content_type="", filename="image-1", problem="Image 1 could not be posted: <!here>.")
    slow = Image(data=b"", content_type="", filename="image-2", url="https://replicate.delivery/b.png",
                 problem="Image 2 could not be posted: it took too long.")
    note = missing_images_note(images("x", refused, slow), [refused, slow])
    assert note.split("\n") == [
        "Image 1 could not be posted: &lt;!here&gt;.",
        "Image 2 could not be posted: it took too long.",
        "<https://replicate.delivery/b.png|image 2> (links expire in an hour)",
    ]
